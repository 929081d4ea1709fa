#!/usr/bin/env bash
# Everything scripts/gpu/run.sh needs that does not travel with the working tree, made here
# (this machine: network, compiler) before the device `run` call. Run from the repository
# root of the checkout the session was started in (the device tool sends that checkout):
#
#   bash scripts/gpu/prepare.sh
#
# - .gpu/kakusan: the release binary (`cargo build --release`);
# - .gl/*.deb: the Vulkan/EGL loaders the device machine lacks (its README's recipe);
# - .whl/*.whl: diffusers and importlib_metadata for Python 3.12, for the PyTorch-eager
#   comparison (torch and diffusers' other needs are in the device image);
# and adds the three folders to .git/info/exclude, so they travel only when carried.
# SKIP_BUILD=1 reuses target/release/kakusan as it is.
set -eu -o pipefail
cd "$(git rev-parse --show-toplevel)"
exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
for d in /.gpu/ /.gl/ /.whl/; do
    grep -qxF "$d" "$exclude" 2>/dev/null || echo "$d" >>"$exclude"
done

if [ "${SKIP_BUILD:-0}" != 1 ]; then
    cargo build --release
fi
mkdir -p .gpu
cp target/release/kakusan .gpu/kakusan
strip .gpu/kakusan 2>/dev/null || true

if ! ls .gl/*.deb >/dev/null 2>&1; then
    mkdir -p .gl /tmp/amd64/partial
    o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
    # shellcheck disable=SC2086
    apt-get $o update
    # shellcheck disable=SC2086
    (cd .gl && apt-get $o download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
fi

if ! ls .whl/diffusers-*.whl >/dev/null 2>&1; then
    for pkg in diffusers==0.42.1 importlib_metadata; do
        python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
            --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
            -d .whl "$pkg"
    done
fi

du -sh .gpu .gl .whl
echo "tracked + untracked files that travel:"
{ git ls-files -z; git ls-files -z --others --exclude-standard; } | xargs -0 du -cb 2>/dev/null | tail -n 1
