#!/usr/bin/env bash
# Spark needs a JDK 17. Install Debian's OpenJDK when it is missing and we may (root with apt-get).
set -euo pipefail
if command -v java >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "java not found: installing Debian's openjdk-17-jre-headless" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless >/dev/null
  exit 0
fi
echo "error: Java 17 is required by Spark and was not found on PATH (install openjdk-17-jre-headless)" >&2
exit 1
