#!/usr/bin/env bash
# The browser test drives Debian's chromium through Playwright (Playwright's own browser download is not used).
# Install it when it is missing and we may (root with apt-get); FLIGHTLINE_CHROMIUM names another binary.
set -euo pipefail
CHROMIUM=${FLIGHTLINE_CHROMIUM:-/usr/bin/chromium}
[[ -x $CHROMIUM ]] && exit 0
if [[ $CHROMIUM == /usr/bin/chromium && $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
  echo "chromium not found: installing Debian's chromium" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  exit 0
fi
echo "error: the browser test needs Chromium at $CHROMIUM (apt-get install -y chromium, or set FLIGHTLINE_CHROMIUM)" >&2
exit 1
