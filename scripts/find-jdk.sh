#!/usr/bin/env bash
# Prints the home of a JDK 25 or newer: $CRUCIBLE_JAVA_HOME, $JAVA_HOME, /usr/lib/jvm/*, or the javac on PATH.
# Exits 1 (printing nothing) when there is none.
java_major() { "$1" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = \([0-9]*\).*/\1/p'; }
for c in "${CRUCIBLE_JAVA_HOME:-}" "${JAVA_HOME:-}" /usr/lib/jvm/temurin-25-jdk-amd64 /usr/lib/jvm/*; do
  [ -n "$c" ] && [ -x "$c/bin/java" ] && [ -x "$c/bin/javac" ] || continue
  if [ "$(java_major "$c/bin/java")" -ge 25 ] 2>/dev/null; then echo "$c"; exit 0; fi
done
if command -v javac >/dev/null 2>&1; then
  c="$(dirname "$(dirname "$(readlink -f "$(command -v javac)")")")"
  if [ "$(java_major "$c/bin/java")" -ge 25 ] 2>/dev/null; then echo "$c"; exit 0; fi
fi
exit 1
