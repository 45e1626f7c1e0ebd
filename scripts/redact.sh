# Sourced by scripts/services and scripts/run.
# The URL with its password, if any (user:password@ or ?password=), shown as ***.
redact() {
  printf '%s' "$1" | sed -E -e 's|^([a-zA-Z][a-zA-Z0-9+.-]*://[^:/?#@]*):[^/?#]*@|\1:***@|' \
    -e 's/([?&]password=)[^&#]*/\1***/'
}
