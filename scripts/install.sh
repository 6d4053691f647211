#!/usr/bin/env bash
# One-step set-up of a LungView development machine (Debian/Ubuntu):
# system packages for Qt's xcb platform, Mesa GL and Xvfb; a .venv; torch and lungview[dev].
# torch==2.13.0 from PyPI on Linux is the CUDA build (several GB); a CPU wheel on local disk wins
# where pip is configured to find one. CPU build from the PyTorch index:
#   TORCH_SPEC="torch==2.13.0+cpu --extra-index-url https://download.pytorch.org/whl/cpu"
set -euo pipefail
cd "$(dirname "$0")/.."

apt_packages=(
    xvfb xauth
    libegl1 libgl1 libglx-mesa0 libgl1-mesa-dri libopengl0
    libxkbcommon0 libxkbcommon-x11-0 libfontconfig1 libdbus-1-3
    libxcb-cursor0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0
    libxcb-render-util0 libxcb-shape0 libxcb-xinerama0 libxcb-xkb1 libxcb-xfixes0
)
if command -v apt-get >/dev/null 2>&1; then
    missing=()
    for p in "${apt_packages[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        sudo_cmd=""
        [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
        $sudo_cmd apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}"
    fi
fi

python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# The pin keeps every machine on the same torch; TORCH_SPEC chooses the build (see above).
.venv/bin/python -m pip install -q ${TORCH_SPEC:-torch==2.13.0} -e '.[dev]'
echo "LungView installed in .venv — run: .venv/bin/lungview --help"
