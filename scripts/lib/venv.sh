# Sourced by scripts/dev and scripts/test: make .venv and install the project into it with
# the given extra, but only when pyproject.toml (or the extra) changed since the last
# install, so a start needs no network and spends no time in a no-op pip run.
# QGW_FORCE_INSTALL=1 installs anyway.
ensure_venv() {
  local extra=$1 python=${PYTHON:-python3} stamp=.venv/.qgw-installed want
  if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
  fi
  want="$extra $(sha256sum pyproject.toml | cut -d' ' -f1)"
  if [ "${QGW_FORCE_INSTALL:-}" != 1 ] && [ -f "$stamp" ] && grep -qxF -- "$want" "$stamp"; then
    return 0
  fi
  .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[$extra]"
  # [dev] includes [embedded]: a dev install also satisfies scripts/dev.
  echo "$want" >"$stamp"
  if [ "$extra" = dev ]; then
    echo "embedded ${want#* }" >>"$stamp"
  fi
}
