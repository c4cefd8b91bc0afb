"""The commit a result records: dirty when tracked files changed, but not because of its own outputs."""

import json
import subprocess

import pytest

from omnisparse.utils.provenance import git_commit, write_result


@pytest.fixture()
def repo(tmp_path):
    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    git("config", "user.email", "t@example.com")
    git("config", "user.name", "t")
    (tmp_path / "results").mkdir()
    for name in ("code.py", "results/r.json", "results/r.png"):
        (tmp_path / name).write_text("v1\n")
    git("add", ".")
    git("commit", "-qm", "init")
    return tmp_path


def test_clean_tree_is_not_dirty(repo):
    sha = git_commit(repo)
    assert len(sha) == 40 and not sha.endswith("-dirty")


def test_changed_tracked_file_is_dirty(repo):
    (repo / "code.py").write_text("v2\n")
    assert git_commit(repo).endswith("-dirty")
    assert git_commit(repo, ignore=[repo / "results/r.png"]).endswith("-dirty")


def test_own_outputs_do_not_make_it_dirty(repo, monkeypatch):
    monkeypatch.chdir(repo)
    (repo / "results/r.png").write_text("new plot\n")
    assert git_commit(repo).endswith("-dirty")
    assert not git_commit(repo, ignore=["results/r.png"]).endswith("-dirty")
    monkeypatch.setattr("omnisparse.utils.provenance.git_commit",
                        lambda cwd=None, ignore=(): git_commit(repo, ignore))
    out = write_result(repo / "results/r.json", {"plot": "results/r.png", "x": 1}, command="c")
    assert not out["commit"].endswith("-dirty")
    assert json.loads((repo / "results/r.json").read_text())["x"] == 1
