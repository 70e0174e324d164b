# System packages SST Desktop needs on Debian/Ubuntu; sourced by install.sh (expects $dev).
# The window's runtime libraries (Qt's xcb platform plugin and QtWebEngine); the app needs them.
window_packages=(
    libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxcb-xinerama0 libxcb-image0
    libxcb-render-util0 libxcb-randr0 libxcb-shape0 libxcb-xkb1 libxkbcommon-x11-0
    libegl1 libgl1 libnss3 libxcomposite1 libxdamage1 libxrandr2 libxtst6 libasound2 libxkbfile1
)
# The GUI and browser tests also need these.
dev_packages=(chromium xvfb xauth fonts-dejavu-core binutils nodejs)

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q " installed"; }

# Debian packages from the list that are not installed; a time64 rename (libasound2t64 on
# Ubuntu 24.04) counts as installed, and is what gets installed where the old name is virtual.
missing_packages() {
    local p
    for p in "$@"; do
        installed "$p" || installed "${p}t64" && continue
        if apt-cache show "${p}t64" >/dev/null 2>&1; then echo "${p}t64"; else echo "$p"; fi
    done
}

# Install system packages with apt as root or with sudo that asks no password; otherwise (or if
# apt fails) print the one command to run. The app still starts without them: it then explains
# what is missing and opens in the web browser.
install_system_packages() {
    local what=$1
    shift
    command -v apt-get >/dev/null && command -v dpkg-query >/dev/null || return 0
    local missing
    mapfile -t missing < <(missing_packages "$@")
    [[ ${#missing[@]} -eq 0 ]] && return 0
    local sudo=()
    if [[ $(id -u) != 0 ]]; then
        if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
            sudo=(sudo -n)
        else
            echo "== $what needs system packages; install them with:"
            echo "   sudo apt-get install -y ${missing[*]}"
            return 0
        fi
    fi
    echo "== system packages for $what: ${missing[*]}"
    if ! { "${sudo[@]}" apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null; }; then
        echo "== could not install them; run: sudo apt-get install -y ${missing[*]}"
        [[ $dev == 1 ]] && return 1
    fi
    return 0
}
