#!/usr/bin/env bash
# Writes throw-away TLS material for the security tests into DIR (openssl):
#   ca.pem                  the test CA
#   server.pem/.key         server certificate for localhost and 127.0.0.1
#   client.pem/.key         client certificate signed by the test CA
#   other-ca.pem            an unrelated CA
#   other-client.pem/.key   client certificate signed by the unrelated CA
#   expired-client.pem/.key client certificate of the test CA, expired
#   expired-server.pem/.key server certificate of the test CA, expired
# Usage: tests/make_test_certs.sh DIR
set -euo pipefail
dir=$1
mkdir -p "$dir"
cd "$dir"
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
ca() {  # name, subject
  key "$1.key"
  openssl req -x509 -new -key "$1.key" -out "$1.pem" -days 2 -subj "/CN=$2" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" 2>/dev/null
}
leaf() {  # name, CA name, days (negative: already expired), extension lines
  key "$1.key"
  openssl req -new -key "$1.key" -out "$1.csr" -subj "/CN=memaudit test $1" 2>/dev/null
  printf '%b' "$4" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2.key" -CAcreateserial -days "$3" \
    -extfile "$1.ext" -out "$1.pem" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}
server_ext='subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n'
client_ext='extendedKeyUsage=clientAuth\n'
ca ca "memaudit test CA"
ca other-ca "unrelated CA"
leaf server ca 2 "$server_ext"
leaf client ca 2 "$client_ext"
leaf other-client other-ca 2 "$client_ext"
leaf expired-client ca -1 "$client_ext"
leaf expired-server ca -1 "$server_ext"
