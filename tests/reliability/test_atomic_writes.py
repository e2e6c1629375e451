"""Atomic writes: the umask's ordinary modes (temporary files are private, what is renamed
into place is not), and a failed write leaves the old file and no debris (issue 17)."""

import os
import stat

import pytest

from goodhartlab.artifacts import atomic_path, atomic_write_text, building


@pytest.fixture
def umask():
    def set_mask(mask):
        old.append(os.umask(mask))

    old: list[int] = []
    yield set_mask
    if old:
        os.umask(old[0])


def _mode(path):
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize(
    "mask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)]
)
def test_written_files_and_directories_follow_the_umask(tmp_path, umask, mask, file_mode, dir_mode):
    umask(mask)
    atomic_write_text(tmp_path / "a.txt", "x")
    assert _mode(tmp_path / "a.txt") == file_mode  # mkstemp alone gives 0o600
    with building(tmp_path / "art") as d:
        (d / "f").write_text("y")
    assert _mode(tmp_path / "art") == dir_mode  # mkdtemp alone gives 0o700


def test_saved_reward_models_are_readable_by_others(
    tmp_path, umask, tiny_reward_model, tiny_tokenizer
):
    from goodhartlab.train.rm import save_reward_model

    umask(0o022)
    out = save_reward_model(tiny_reward_model, tiny_tokenizer, tmp_path / "rm", {})
    assert _mode(out) == 0o755


def test_a_failed_write_keeps_the_old_file_and_leaves_nothing_behind(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]
