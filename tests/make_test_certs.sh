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
# leaf name, CA name, days valid from now, extension lines
leaf() {
  key "$1.key"
  openssl req -new -key "$1.key" -out "$1.csr" -subj "/CN=memaudit test $1" 2>/dev/null
  printf '%b' "$4" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2.key" -CAcreateserial -days "$3" \
    -extfile "$1.ext" -out "$1.pem" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}
# expired_leaf name, CA name, extension lines: valid from two days ago until
# yesterday. `openssl ca` sets both dates explicitly on OpenSSL 3.0 (Debian 12)
# and 3.5 (Debian 13); 3.5's `x509 -days` refuses the negative count.
expired_leaf() {
  key "$1.key"
  openssl req -new -key "$1.key" -out "$1.csr" -subj "/CN=memaudit test $1" 2>/dev/null
  printf '%b' "$3" > "$1.ext"
  mkdir -p "$1.ca" && : > "$1.ca/index.txt"
  cat > "$1.ca/ca.cnf" <<EOF
[ca]
default_ca = expired
[expired]
database = $1.ca/index.txt
new_certs_dir = $1.ca
serial = $1.ca/serial
default_md = sha256
policy = anything
[anything]
commonName = supplied
EOF
  openssl rand -hex 16 > "$1.ca/serial"
  openssl ca -batch -notext -config "$1.ca/ca.cnf" -cert "$2.pem" -keyfile "$2.key" \
    -in "$1.csr" -out "$1.pem" -extfile "$1.ext" \
    -startdate "$(date -u -d '2 days ago' +%Y%m%d%H%M%SZ)" \
    -enddate "$(date -u -d '1 day ago' +%Y%m%d%H%M%SZ)" 2>/dev/null
  rm -rf "$1.csr" "$1.ext" "$1.ca"
}
server_ext='subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n'
client_ext='extendedKeyUsage=clientAuth\n'
ca ca "memaudit test CA"
ca other-ca "unrelated CA"
leaf server ca 2 "$server_ext"
leaf client ca 2 "$client_ext"
leaf other-client other-ca 2 "$client_ext"
expired_leaf expired-client ca "$client_ext"
expired_leaf expired-server ca "$server_ext"
