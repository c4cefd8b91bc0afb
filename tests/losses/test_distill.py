import torch

from omnisparse.losses.transducer import lattice_kl


def _lattice(seed, B=2, T=5, U1=4, V=7):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, T, U1, V, generator=g).log_softmax(-1)


def test_kl_is_zero_for_equal_lattices_and_positive_otherwise():
    enc_lens, token_lens = torch.tensor([5, 3]), torch.tensor([3, 1])
    t = _lattice(0)
    assert float(lattice_kl(t, t, enc_lens, token_lens)) == 0.0
    assert float(lattice_kl(t, _lattice(1), enc_lens, token_lens)) > 0.0


def test_gradient_flows_only_into_the_student():
    enc_lens, token_lens = torch.tensor([5, 3]), torch.tensor([3, 1])
    teacher_logits = torch.randn(2, 5, 4, 7, requires_grad=True)  # a teacher that is still part of a graph
    student_logits = torch.randn(2, 5, 4, 7, requires_grad=True)
    lattice_kl(teacher_logits.log_softmax(-1), student_logits.log_softmax(-1), enc_lens, token_lens).backward()
    assert teacher_logits.grad is None
    assert student_logits.grad is not None and student_logits.grad.abs().sum() > 0


def test_padded_nodes_are_ignored():
    enc_lens, token_lens = torch.tensor([5, 3]), torch.tensor([3, 1])
    t, s = _lattice(0), _lattice(1)
    s2 = s.clone()
    s2[1, 3:] = _lattice(2)[1, 3:]  # beyond utterance 1's 3 frames
    s2[1, :, 2:] = _lattice(3)[1, :, 2:]  # beyond its 1 token
    torch.testing.assert_close(lattice_kl(t, s, enc_lens, token_lens), lattice_kl(t, s2, enc_lens, token_lens))
