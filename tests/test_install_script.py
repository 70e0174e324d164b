"""packaging/system_packages.sh (sourced by install.sh): which system packages it installs, and the
one apt command it prints when it cannot. apt, dpkg, sudo and id are stand-ins on PATH here."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _stub(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text("#!/bin/bash\n" + body + "\n")
    path.chmod(0o755)


def _run(
    tmp_path: Path,
    *,
    uid: int,
    sudo_ok: bool,
    installed: set[str],
    t64: set[str] = frozenset(),
    dev: int = 0,
    apt_fails: bool = False,
) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Source the script with stand-in tools and call install_system_packages for the window."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    log = tmp_path / "apt.log"
    log.write_text("")
    _stub(bin_dir, "id", f"echo {uid}")
    _stub(
        bin_dir,
        "dpkg-query",
        'case " ' + " ".join(installed) + ' " in *" ${@: -1} "*) '
        "echo 'install ok installed';; *) exit 1;; esac",
    )
    _stub(
        bin_dir,
        "apt-cache",
        'case " ' + " ".join(t64) + ' " in *" ${@: -1} "*) exit 0;; *) exit 100;; esac',
    )
    _stub(bin_dir, "apt-get", f'echo "$(id -u) $*" >> {log}; exit {1 if apt_fails else 0}')
    _stub(
        bin_dir,
        "sudo",
        f"[[ $1 == -n ]] || exit 1; shift; {'' if sudo_ok else 'exit 1;'} "
        f'[[ $1 == true ]] && exit 0; "$@"',
    )
    script = (
        f"set -euo pipefail; dev={dev}; source packaging/system_packages.sh; "
        'install_system_packages "the app window" "${window_packages[@]}"; echo done'
    )
    proc = subprocess.run(
        ["/bin/bash", "-c", script],
        cwd=REPO,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    return proc, [ln for ln in log.read_text().splitlines() if ln]


ALL_BUT_CURSOR = {
    "libxcb-icccm4", "libxcb-keysyms1", "libxcb-xinerama0", "libxcb-image0", "libxcb-render-util0",
    "libxcb-randr0", "libxcb-shape0", "libxcb-xkb1", "libxkbcommon-x11-0", "libegl1", "libgl1",
    "libnss3", "libxcomposite1", "libxdamage1", "libxrandr2", "libxtst6", "libxkbfile1",
}  # fmt: skip


def test_root_installs_only_the_missing_window_libraries(tmp_path):
    proc, apt = _run(tmp_path, uid=0, sudo_ok=False, installed=ALL_BUT_CURSOR | {"libasound2t64"})
    assert proc.returncode == 0 and "done" in proc.stdout, proc.stderr
    assert apt == ["0 update -qq", "0 install -y -qq libxcb-cursor0"]


def test_passwordless_sudo_is_used(tmp_path):
    proc, apt = _run(
        tmp_path, uid=1000, sudo_ok=True, installed=ALL_BUT_CURSOR, t64={"libasound2t64"}
    )
    assert proc.returncode == 0, proc.stderr
    # Where libasound2 became libasound2t64 (Ubuntu 24.04), the new name is installed.
    assert apt[-1] == "1000 install -y -qq libxcb-cursor0 libasound2t64"


def test_without_rights_it_prints_the_one_apt_command(tmp_path):
    proc, apt = _run(tmp_path, uid=1000, sudo_ok=False, installed=ALL_BUT_CURSOR | {"libasound2"})
    assert proc.returncode == 0 and "done" in proc.stdout, proc.stderr
    assert apt == []
    assert "   sudo apt-get install -y libxcb-cursor0\n" in proc.stdout


@pytest.mark.parametrize("dev", [0, 1])
def test_a_failing_apt_prints_the_command_and_fails_only_for_dev(tmp_path, dev):
    proc, _ = _run(
        tmp_path,
        uid=0,
        sudo_ok=False,
        installed=ALL_BUT_CURSOR | {"libasound2"},
        dev=dev,
        apt_fails=True,
    )
    assert "run: sudo apt-get install -y libxcb-cursor0" in proc.stdout
    assert (proc.returncode == 0) == (dev == 0), proc.stdout + proc.stderr


def test_nothing_missing_runs_no_apt(tmp_path):
    proc, apt = _run(
        tmp_path,
        uid=1000,
        sudo_ok=False,
        installed=ALL_BUT_CURSOR | {"libxcb-cursor0", "libasound2"},
    )
    assert proc.returncode == 0 and apt == [] and "sudo apt-get" not in proc.stdout
