#!/usr/bin/env bash
# Fetches the jars of the real Apache Kafka broker the integration tests start
# (KRaft mode, see test/support/kafka-broker.ts) from Maven Central, through
# the small Maven project infra/kafka/pom.xml, into infra/kafka/target/libs.
# Idempotent: does nothing when the jars for the current pom.xml are there
# (a marker file holding the pom's checksum is written after a complete fetch).
# Installs Debian's Java 17 and Maven first when they are missing. Starts no broker.
set -euo pipefail
cd "$(dirname "$0")/.."
pom=infra/kafka/pom.xml
libs=infra/kafka/target/libs
marker="$libs/.complete"
sum=$(sha256sum "$pom" | cut -d' ' -f1)
if [ -f "$marker" ] && [ "$(cat "$marker")" = "$sum" ]; then exit 0; fi

if ! command -v mvn >/dev/null 2>&1 || ! command -v java >/dev/null 2>&1; then
  echo '{"msg":"installing openjdk-17 and maven from Debian packages"}'
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends openjdk-17-jdk-headless maven >/dev/null
fi

version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$pom")
echo "{\"msg\":\"fetching the Kafka broker jars from Maven Central\",\"kafkaVersion\":\"$version\",\"dir\":\"$libs\"}"
# A partial or older set of jars must not mix into the classpath: start from an empty dir.
rm -rf "$libs"
mkdir -p infra/kafka/target
log=infra/kafka/target/fetch.log
if ! mvn -q -B -Dstyle.color=never -f "$pom" dependency:copy-dependencies \
    -DoutputDirectory=target/libs -DincludeScope=runtime >"$log" 2>&1; then
  cat "$log" >&2
  echo '{"msg":"fetching the Kafka broker jars failed","log":"'"$log"'"}' >&2
  exit 1
fi
ls "$libs"/kafka_2.13-*.jar >/dev/null
echo "$sum" > "$marker"
