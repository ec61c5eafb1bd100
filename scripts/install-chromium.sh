#!/usr/bin/env bash
# Chromium (and a font with Chinese glyphs) for the one test that opens report.html in a headless browser.
# Installed with Debian's packages where this user may (root, apt-get present); anywhere else that test is
# skipped, saying why. Never fails the test command.
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "install-chromium: installing Debian's chromium for the report screenshot test" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-wqy-microhei >/dev/null) \
        || echo "install-chromium: could not install chromium: the screenshot test will be skipped" >&2
else
    echo "install-chromium: no chromium and no root apt-get: the screenshot test will be skipped" >&2
fi
exit 0
