import shutil
import subprocess
import sys

from tests.conftest import BOOK_MODELS, REPO, need_shared


def run(*args):
    return subprocess.run([sys.executable, str(REPO / "scripts" / "fetch_book_models.py"), *args],
                          capture_output=True, text=True, timeout=120)


def test_fetch_checks_digests_into_the_user_model_dir(tmp_path):
    src = need_shared(BOOK_MODELS)
    dest = tmp_path / "models" / "book"
    proc = run("--from", str(src), "--dest", str(dest))
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in dest.iterdir()) == sorted(p.name for p in src.glob("*.state"))
    again = run("--from", str(src), "--dest", str(dest))
    assert again.stdout.count("already there, digest matches") == 2


def test_fetch_refuses_a_tampered_file(tmp_path):
    src = tmp_path / "mirror"
    shutil.copytree(need_shared(BOOK_MODELS), src)
    victim = next(src.glob("seg_*.state"))
    victim.write_bytes(victim.read_bytes()[:-10] + b"0123456789")
    dest = tmp_path / "dest"
    proc = run("--from", str(src), "--dest", str(dest))
    assert proc.returncode == 2
    assert "does not match the published" in proc.stderr
    assert not any(p.name.startswith("seg_") for p in dest.iterdir())  # nothing half-written kept
