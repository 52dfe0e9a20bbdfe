#!/usr/bin/env bash
# Debian trixie's Dask distributed 2024.12.1, for the Dask tests, without touching the machine's
# own apt sources: the .debs of python3-distributed, python3-dask, python3-zict and
# python3-tblib are downloaded with a sources list of their own, unpacked with dpkg -x, and run
# by two venvs of `python3` whose other dependencies come from the local wheel folder:
#
#   $DIR/tblib32/bin/python   tblib 3.2 from the wheel folder (what pip installs today)
#   $DIR/tblib31/bin/python   tblib 3.1.0 from trixie's .deb
#
# Usage: scripts/dask-trixie.sh [DIR]   (default /tmp/picklewire-dask-trixie; WHEELS overrides
# the wheel folder, default /opt/pypi/files). Prints the two interpreters' paths. Reuses DIR
# when it is complete.
set -euo pipefail
DIR=${1:-/tmp/picklewire-dask-trixie}
WHEELS=${WHEELS:-/opt/pypi/files}
if [ -x "$DIR/tblib32/bin/python" ] && [ -x "$DIR/tblib31/bin/python" ] && [ -f "$DIR/ok" ]; then
  echo "$DIR/tblib32/bin/python"; echo "$DIR/tblib31/bin/python"; exit 0
fi
rm -rf "$DIR"
mkdir -p "$DIR/apt/lists/partial" "$DIR/apt/cache/archives/partial" "$DIR/debs" "$DIR/root"
echo 'deb http://deb.debian.org/debian trixie main' > "$DIR/apt/sources.list"
APT=(-o "Dir::Etc::SourceList=$DIR/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
     -o "Dir::State::Lists=$DIR/apt/lists" -o "Dir::Cache=$DIR/apt/cache" -o APT::Sandbox::User=root)
apt-get -qq "${APT[@]}" update
(cd "$DIR/debs" && apt-get -qq "${APT[@]}" download python3-distributed python3-dask python3-zict python3-tblib)
for deb in "$DIR"/debs/*.deb; do dpkg -x "$deb" "$DIR/root"; done
PKGS=$DIR/root/usr/lib/python3/dist-packages
# Only the three Dask packages go on the path; tblib is chosen per venv.
mkdir -p "$DIR/dask-site" "$DIR/tblib31-site"
for p in dask distributed zict; do ln -s "$PKGS/$p" "$DIR/dask-site/$p"; done
ln -s "$PKGS"/dask-*.dist-info "$PKGS"/distributed-*.dist-info "$DIR/dask-site/"
ln -s "$PKGS/tblib" "$DIR/tblib31-site/tblib"
DEPS=(tornado msgpack cloudpickle toolz sortedcontainers psutil click pyyaml jinja2 locket partd fsspec packaging numpy lz4 importlib_metadata urllib3 tblib)
python3 -m venv "$DIR/tblib32"
"$DIR/tblib32/bin/python" -m pip install --quiet --disable-pip-version-check --no-index --find-links "$WHEELS" "${DEPS[@]}"
site=$("$DIR/tblib32/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$DIR/dask-site" > "$site/dask-trixie.pth"
# The second venv is a copy without the wheel's tblib (bin/python finds its venv by its own path).
cp -a "$DIR/tblib32" "$DIR/tblib31"
site31=${site/$DIR\/tblib32/$DIR\/tblib31}
rm -rf "$site31"/tblib "$site31"/tblib-*.dist-info
echo "$DIR/tblib31-site" >> "$site31/dask-trixie.pth"
for v in tblib31 tblib32; do
  "$DIR/$v/bin/python" -c 'import distributed, tblib, numpy, lz4; print(distributed.__version__, "tblib", tblib.__version__, "numpy", numpy.__version__)' >&2
done
touch "$DIR/ok"
echo "$DIR/tblib32/bin/python"; echo "$DIR/tblib31/bin/python"
