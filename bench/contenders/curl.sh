#!/usr/bin/env bash
# The curl + jq contender: the Azure Arc documentation's token pattern
# (GET with Metadata:true -> 401 with a realm file -> GET again with Basic
# <file contents> -> token), then one curl per secret.
#
# usage: curl.sh VAULT_URL OUT_DIR NAME...   (env: IDENTITY_ENDPOINT, CA_FILE)
set -euo pipefail
vault=$1 out=$2
shift 2
mkdir -p "$out"
url="$IDENTITY_ENDPOINT?api-version=2020-06-01&resource=https%3A%2F%2Fvault.azure.net"
realm=$(curl -s -D - -o /dev/null -H Metadata:true "$url" \
    | grep -i '^www-authenticate:' | sed 's/.*Basic realm=//' | tr -d '\r')
token=$(curl -sf -H Metadata:true -H "Authorization: Basic $(cat "$realm")" "$url" \
    | jq -r .access_token)
umask 077
for name in "$@"; do
    curl -sf --cacert "$CA_FILE" -H "Authorization: Bearer $token" \
        "$vault/secrets/$name?api-version=2025-07-01" | jq -j .value > "$out/$name"
done
