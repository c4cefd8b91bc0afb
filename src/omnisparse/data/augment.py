"""On-the-fly training-time audio augmentation: speed, reverberation, additive noise, gain.

The chain for one utterance (float mono 16 kHz samples in [-1, 1])::

    speed perturbation -> reverberation (simulated room) -> noise at a random SNR -> gain -> clip guard

Every random choice comes from the ``numpy.random.Generator`` passed in; :func:`cut_rng` derives it from
(train seed, epoch, cut id) only, so a resumed run, or any number of DataLoader workers, sees the
same augmented audio for the same batches. The RIR bank (:func:`load_or_make_rir_bank`) is simulated
once from ``augment.rir_seed`` and cached as ``.npz``.

Libraries: lhotse reads audio, perturbs speed (its ``Speed`` transform, a torch sinc resampler that needs
no torchaudio) and resamples the 8 kHz music; pyroomacoustics simulates the shoebox rooms (image
source method); scipy convolves (FFT).
Hand-written, as no library here does them: coloured noise, active-speech-SNR mixing and the babble sum
(lhotse's ``cut.mix`` scales by whole-signal energy and re-decodes each talker), and the RIR convolution glue.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from omnisparse.io.atomic import atomic_write_bytes

if TYPE_CHECKING:
    from omnisparse.config import AugmentConfig

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
NOISE_KINDS = ("coloured", "babble", "music")
# power spectral density ~ f^-alpha
COLOUR_SLOPES = {"white": 0.0, "pink": 1.0, "brown": 2.0}
_FRAME_S = 0.02  # active-speech frames
_ACTIVE_FLOOR_DB = 40.0  # frames this far below the loudest one count as pauses
_ROOM_MARGIN_M = 0.5  # source and microphone stay this far from the walls and from each other
_BABBLE_CACHE_S = 600.0  # decoded babble talkers kept per process (~38 MB of float32)
_BANK_FORMAT = 1  # bump when the simulation changes: old cached banks are then not reused


def cut_rng(seed: int, epoch: int, cut_id: str) -> np.random.Generator:
    """The generator that augments ``cut_id`` in ``epoch`` of a run seeded with ``seed``."""
    key = int.from_bytes(hashlib.blake2b(cut_id.encode(), digest_size=8).digest(), "little")
    return np.random.default_rng([seed % 2**64, epoch, key])


def active_power(x: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float:
    """Mean power of ``x`` (N,) over its active 20 ms frames (within 40 dB of the loudest); 0.0 for silence."""
    n = max(1, int(_FRAME_S * sample_rate))
    m = len(x) // n
    if m == 0:
        return float(np.mean(np.square(x, dtype=np.float64))) if len(x) else 0.0
    p = np.mean(np.square(x[: m * n].reshape(m, n), dtype=np.float64), axis=1)
    top = float(p.max())
    if top <= 0.0:
        return 0.0
    return float(p[p >= top * 10 ** (-_ACTIVE_FLOOR_DB / 10)].mean())


def mix_at_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """``speech + g * noise`` (both (N,)) with ``g`` such that active speech power / mean noise power is ``snr_db``.

    Speech without active frames, or silent noise, comes back unchanged."""
    if noise.shape != speech.shape:
        raise ValueError(f"noise of shape {noise.shape} does not match speech of shape {speech.shape}")
    ps = active_power(speech, sample_rate)
    pn = float(np.mean(np.square(noise, dtype=np.float64)))
    if ps <= 0.0 or pn <= 0.0:
        return speech
    g = np.sqrt(ps / (pn * 10 ** (snr_db / 10)))
    return (speech + g * noise).astype(np.float32)


def coloured_noise(n: int, colour: str, rng: np.random.Generator, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """(n,) float32 Gaussian noise of unit power whose spectrum falls as f^-alpha (white 0, pink 1, brown 2)."""
    if colour not in COLOUR_SLOPES:
        raise ValueError(f"unknown noise colour {colour!r}; known: {sorted(COLOUR_SLOPES)}")
    alpha = COLOUR_SLOPES[colour]
    if alpha == 0.0 or n < 2:
        x = rng.standard_normal(n)
    else:
        # shaped in the frequency domain at a power-of-two length: an FFT of an utterance's own length
        # (often a large prime factor) costs more than the rest of the chain
        m = 1 << (n - 1).bit_length()
        spec = rng.standard_normal(m // 2 + 1) + 1j * rng.standard_normal(m // 2 + 1)
        # flat below 20 Hz: an f^-2 slope down to DC would be a random drift, not a noise
        f = np.maximum(np.fft.rfftfreq(m, 1.0 / sample_rate), 20.0)
        x = np.fft.irfft(spec * f ** (-alpha / 2), m)[:n]
    p = float(np.mean(x * x))
    return (x / np.sqrt(p) if p > 0 else x).astype(np.float32)


def reverberate(x: np.ndarray, rir: np.ndarray, direct: int) -> np.ndarray:
    """``x`` (N,) convolved with ``rir`` (L,), shifted so the direct path (sample ``direct`` of the RIR) stays
    where ``x`` was, cut to N samples and scaled back to the power of ``x`` (Kaldi's wav-reverberate)."""
    from scipy.signal import fftconvolve  # here: importing scipy.signal costs every command ~1 s

    y = fftconvolve(x.astype(np.float64), rir.astype(np.float64))[direct: direct + len(x)]
    p_in, p_out = float(np.mean(np.square(x, dtype=np.float64))), float(np.mean(y * y))
    if p_out > 0.0:
        y *= np.sqrt(p_in / p_out)
    return y.astype(np.float32)


def _tile(x: np.ndarray, n: int, offset: int) -> np.ndarray:
    """n samples of ``x`` repeated end to end, starting at ``offset``."""
    offset %= len(x)
    if offset + n <= len(x):
        return x[offset: offset + n]
    reps = -(-(offset + n) // len(x))
    return np.concatenate([x] * reps)[offset: offset + n]


# ---------------------------------------------------------------------------------------------- RIR bank
@dataclass(frozen=True)
class RirBank:
    """Simulated room impulse responses at 16 kHz.

    rirs    (N, L) float32, zero-padded after each RIR's own length
    lengths (N,) int64, samples
    direct  (N,) int64, index of the direct-path arrival in each RIR
    rt60    (N,) float32, seconds: the Sabine target each room's absorption was chosen for
    """

    rirs: np.ndarray
    lengths: np.ndarray
    direct: np.ndarray
    rt60: np.ndarray

    def __len__(self) -> int:
        return len(self.lengths)

    def get(self, i: int) -> tuple[np.ndarray, int]:
        """RIR ``i`` (L_i,) and its direct-path index."""
        return self.rirs[i, : int(self.lengths[i])], int(self.direct[i])

    def arrays(self) -> dict[str, np.ndarray]:
        return {"rirs": self.rirs, "lengths": self.lengths, "direct": self.direct, "rt60": self.rt60}


def _bank_params(cfg: AugmentConfig) -> dict[str, Any]:
    from importlib.metadata import version  # not the module: importing pyroomacoustics takes seconds

    return {"format": _BANK_FORMAT, "n": cfg.rir_bank_size, "seed": cfg.rir_seed, "rt60": list(cfg.rt60),
            "room_min": list(cfg.room_min), "room_max": list(cfg.room_max), "sample_rate": SAMPLE_RATE,
            "pyroomacoustics": version("pyroomacoustics")}


def rir_bank_path(cache_dir: str | Path, cfg: AugmentConfig) -> Path:
    """Where the bank of ``cfg`` is cached: the name is a digest of everything that shapes it."""
    key = hashlib.sha1(json.dumps(_bank_params(cfg), sort_keys=True).encode()).hexdigest()[:16]
    return Path(cache_dir) / f"rir_bank_{key}.npz"


def simulate_rir_bank(cfg: AugmentConfig) -> RirBank:
    """``cfg.rir_bank_size`` shoebox rooms (image source method), each with a random size in
    [room_min, room_max] m, a target RT60 in ``cfg.rt60`` s (absorption from Sabine's formula), and a
    random source and microphone position; deterministic given ``cfg.rir_seed``."""
    import pyroomacoustics as pra

    rng = np.random.default_rng([cfg.rir_seed % 2**64, 0x52_49_52])
    lo, hi = np.asarray(cfg.room_min, dtype=np.float64), np.asarray(cfg.room_max, dtype=np.float64)
    global_delay = pra.constants.get("frac_delay_length") // 2  # pyroomacoustics starts every RIR this late
    rirs, direct, rt60s = [], [], []
    for _ in range(100 * cfg.rir_bank_size):
        if len(rirs) == cfg.rir_bank_size:
            break
        dims = rng.uniform(lo, hi)
        rt60 = float(rng.uniform(*cfg.rt60))
        src = rng.uniform(_ROOM_MARGIN_M, dims - _ROOM_MARGIN_M)
        mic = rng.uniform(_ROOM_MARGIN_M, dims - _ROOM_MARGIN_M)
        dist = float(np.linalg.norm(src - mic))
        try:
            absorption, max_order = pra.inverse_sabine(rt60, dims)
        except ValueError:  # this room is too large for so short an RT60: draw another
            continue
        if dist < _ROOM_MARGIN_M:
            continue
        room = pra.ShoeBox(dims, fs=SAMPLE_RATE, materials=pra.Material(absorption), max_order=max_order)
        room.add_source(src)
        room.add_microphone(mic)
        room.compute_rir()
        rir = np.asarray(room.rir[0][0], dtype=np.float64)
        d = int(round(dist / room.c * SAMPLE_RATE)) + global_delay
        # drop the tail once 60 dB of the energy has decayed: longer only costs convolution time
        rest = np.cumsum(rir[::-1] ** 2)[::-1]
        end = max(d + 1, int(np.argmax(rest < rest[0] * 1e-6)) or len(rir))
        rir = rir[:end]
        rirs.append((rir / np.abs(rir).max()).astype(np.float32))
        direct.append(d)
        rt60s.append(rt60)
    else:
        if len(rirs) < cfg.rir_bank_size:
            raise ValueError(f"augment.rt60={cfg.rt60} s is too short for rooms of {cfg.room_min}-{cfg.room_max} m "
                             "(absorption would exceed 1): raise rt60 or shrink the rooms")
    lengths = np.array([len(r) for r in rirs], dtype=np.int64)
    out = np.zeros((len(rirs), int(lengths.max(initial=1))), dtype=np.float32)
    for i, r in enumerate(rirs):
        out[i, : len(r)] = r
    return RirBank(out, lengths, np.array(direct, dtype=np.int64), np.array(rt60s, dtype=np.float32))


def _read_bank(path: Path, n: int) -> RirBank:
    with np.load(path, allow_pickle=False) as z:
        bank = RirBank(z["rirs"], z["lengths"], z["direct"], z["rt60"])
    if bank.rirs.ndim != 2 or len(bank) != n or bank.rirs.shape[0] != n or len(bank.direct) != n:
        raise ValueError(f"holds {len(bank)} RIRs of shape {bank.rirs.shape}, expected {n}")
    return bank


def _write_bank(path: Path, bank: RirBank) -> None:
    buf = io.BytesIO()
    np.savez(buf, **bank.arrays())
    atomic_write_bytes(path, buf.getvalue())


def load_or_make_rir_bank(cfg: AugmentConfig, cache_dir: str | Path) -> RirBank:
    """The bank of ``cfg`` from ``cache_dir`` if cached there, else simulated and cached (written
    atomically; a cache that cannot be written or read back is warned about, never fatal)."""
    path = rir_bank_path(cache_dir, cfg)
    if path.exists():
        try:
            return _read_bank(path, cfg.rir_bank_size)
        except Exception as e:  # noqa: BLE001 - a truncated or foreign file: simulate afresh
            log.warning("ignoring the unreadable RIR bank %s (%s: %s); simulating it again", path, type(e).__name__, e)
    log.info("simulating %d room impulse responses (once; cached at %s)", cfg.rir_bank_size, path)
    bank = simulate_rir_bank(cfg)
    try:
        _write_bank(path, bank)
    except OSError as e:
        log.warning("could not cache the RIR bank at %s (%s); using it uncached", path, e)
    return bank


# ---------------------------------------------------------------------------------------------- noise sources
class _BabblePool:
    """Train cuts whose audio, summed, makes babble; decoded audio is cached (LRU, ``_BABBLE_CACHE_S`` s)."""

    def __init__(self, cuts: Sequence, size: int, seed: int):
        cuts = list(cuts)
        if 0 < size < len(cuts):
            pick = np.random.default_rng([seed % 2**64, 0xBAB]).choice(len(cuts), size=size, replace=False)
            cuts = [cuts[i] for i in sorted(pick)]
        self.cuts = cuts
        self.ids = [c.id for c in cuts]
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cached = 0

    def __len__(self) -> int:
        return len(self.cuts)

    def audio(self, i: int) -> np.ndarray:
        if i in self._cache:
            self._cache.move_to_end(i)
            return self._cache[i]
        x = np.asarray(self.cuts[i].load_audio()[0], dtype=np.float32)
        self._cache[i] = x
        self._cached += len(x)
        while self._cached > _BABBLE_CACHE_S * SAMPLE_RATE and len(self._cache) > 1:
            _, old = self._cache.popitem(last=False)
            self._cached -= len(old)
        return x

    def __getstate__(self) -> dict:  # DataLoader workers start with an empty cache
        return {**self.__dict__, "_cache": OrderedDict(), "_cached": 0}


class _MusicPool:
    """The music files of a directory, read a segment at a time (lhotse resamples them to 16 kHz)."""

    def __init__(self, directory: str | Path):
        self.paths = sorted(p for p in Path(directory).glob("*") if p.suffix.lower() in (".wav", ".flac"))
        self._recordings: list | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def segment(self, n: int, rng: np.random.Generator) -> np.ndarray:
        from lhotse import Recording

        if self._recordings is None:
            recs = [Recording.from_file(p) for p in self.paths]
            self._recordings = [r if r.sampling_rate == SAMPLE_RATE else r.resample(SAMPLE_RATE) for r in recs]
        rec = self._recordings[int(rng.integers(len(self._recordings)))]
        dur = n / SAMPLE_RATE
        offset = float(rng.uniform(0.0, max(0.0, rec.duration - dur - 0.1)))
        x = rec.load_audio(offset=offset, duration=min(dur, rec.duration - offset)).mean(axis=0)
        return _tile(x, n, 0) if len(x) < n else x[:n]

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_recordings": None}


# ---------------------------------------------------------------------------------------------- the chain
class Augmenter:
    """Applies the ``augment`` chain to the audio of one utterance.

    ``babble_cuts``: train cuts to draw babble talkers from (``cfg.babble_pool`` of them, picked with
    ``seed``); without them babble is off. ``rir_bank``: needed when ``cfg.reverb_prob > 0``.
    """

    def __init__(self, cfg: AugmentConfig, rir_bank: RirBank | None = None, babble_cuts: Sequence | None = None,
                 seed: int = 0):
        self.cfg = cfg
        if cfg.reverb_prob > 0 and (rir_bank is None or len(rir_bank) == 0):
            raise ValueError("augment.reverb_prob > 0 needs a RIR bank (see load_or_make_rir_bank)")
        self.rir_bank = rir_bank
        self.babble = _BabblePool(babble_cuts, cfg.babble_pool, seed) if babble_cuts is not None else None
        self.music = _MusicPool(cfg.music_dir) if cfg.music_weight > 0 and Path(cfg.music_dir).is_dir() else None
        weights = {"coloured": cfg.coloured_weight, "babble": cfg.babble_weight, "music": cfg.music_weight}
        if weights["music"] > 0 and not self.music:
            log.warning("no music under augment.music_dir=%s: music noise is off", cfg.music_dir)
            weights["music"] = 0.0
        if weights["babble"] > 0 and (self.babble is None or len(self.babble) < 2):
            log.warning("babble noise is off: it needs a pool of at least 2 train utterances")
            weights["babble"] = 0.0
        self.kinds = [k for k in NOISE_KINDS if weights[k] > 0]
        total = sum(weights[k] for k in self.kinds)
        self.kind_probs = np.array([weights[k] / total for k in self.kinds]) if self.kinds else np.zeros(0)

    @classmethod
    def from_config(cls, cfg: AugmentConfig, cache_dir: str | Path, babble_cuts: Sequence | None = None,
                    seed: int = 0) -> Augmenter:
        """An Augmenter with the RIR bank of ``cfg`` (loaded from, or simulated into, ``cache_dir``)."""
        bank = load_or_make_rir_bank(cfg, cache_dir) if cfg.reverb_prob > 0 else None
        return cls(cfg, bank, babble_cuts, seed)

    def __call__(self, samples: np.ndarray, rng: np.random.Generator, cut_id: str = "",
                 info: dict | None = None) -> np.ndarray:
        """``samples`` (N,) float mono 16 kHz -> (N',) float32, N' = ~N / speed factor.

        ``cut_id`` keeps an utterance out of its own babble; ``info``, when given, receives what was applied."""
        from lhotse.augmentation import Speed

        cfg = self.cfg
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        info = {} if info is None else info
        # one draw per stage whatever its probability, so that one stage's setting leaves the others' draws alone
        if rng.random() < cfg.speed_prob:
            factor = float(cfg.speed_factors[int(rng.integers(len(cfg.speed_factors)))])
            if factor != 1.0:
                x = Speed(factor)(x[None], SAMPLE_RATE)[0]
            info["speed"] = factor
        if rng.random() < cfg.reverb_prob and self.rir_bank is not None:
            i = int(rng.integers(len(self.rir_bank)))
            x = reverberate(x, *self.rir_bank.get(i))
            info["rir"] = i
        if rng.random() < cfg.noise_prob and self.kinds:
            kind = self.kinds[int(rng.choice(len(self.kinds), p=self.kind_probs))]
            snr = float(rng.uniform(*cfg.snr_db))
            x = mix_at_snr(x, self._noise(kind, len(x), rng, cut_id, info), snr)
            info.update(noise=kind, snr_db=snr)
        gain = float(rng.uniform(*cfg.gain_db))
        x = x * np.float32(10 ** (gain / 20))
        info["gain_db"] = gain
        peak = float(np.abs(x).max(initial=0.0))
        if peak > 1.0:  # scaled down, not clipped: clipping would add distortion nobody asked for
            x *= np.float32(0.99 / peak)
            info["clip_guard"] = 0.99 / peak
        return x

    def _noise(self, kind: str, n: int, rng: np.random.Generator, cut_id: str, info: dict) -> np.ndarray:
        """(n,) float32 noise of ``kind`` (any level: ``mix_at_snr`` scales it)."""
        if kind == "coloured":
            colour = self.cfg.colours[int(rng.integers(len(self.cfg.colours)))]
            info["colour"] = colour
            return coloured_noise(n, colour, rng)
        if kind == "music":
            return self.music.segment(n, rng).astype(np.float32)
        pool = self.babble
        k = int(rng.integers(self.cfg.babble_talkers[0], self.cfg.babble_talkers[1] + 1))
        picks = [int(i) for i in rng.choice(len(pool), size=min(k + 1, len(pool)), replace=False)]
        picks = [i for i in picks if pool.ids[i] != cut_id][:k]
        out = np.zeros(n, dtype=np.float64)
        for i in picks:
            talker = pool.audio(i)
            seg = _tile(talker, n, int(rng.integers(len(talker))))
            p = active_power(seg)
            if p > 0:  # equal-level talkers
                out += seg / np.sqrt(p)
        info["talkers"] = len(picks)
        return out.astype(np.float32)
