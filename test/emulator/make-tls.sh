#!/bin/sh
# make-tls.sh OUTDIR -- test certificates for the Okta emulator (EC P-256, openssl CLI).
#
# OUTDIR gets:
#   ca.pem, ca-key.pem                  test CA
#   server.pem, server-key.pem          server cert signed by the CA, SANs IP:127.0.0.1, DNS:localhost
#   unknown-ca.pem, unknown-ca-key.pem  self-signed cert for IP:127.0.0.1 / localhost (a CA nobody trusts)
#   wrong-host.pem, wrong-host-key.pem  cert signed by the CA, but for DNS:wrong.example only
# Test keys only: never use them for anything else.
set -eu

if [ $# -ne 1 ]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi
out=$1
mkdir -p "$out"
cd "$out"
umask 077

days=3650
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

newkey() { openssl ecparam -name prime256v1 -genkey -noout -out "$1" 2>/dev/null; }

# Leaf certificate signed by the test CA: sign_leaf NAME CN SAN
sign_leaf() {
    newkey "$1-key.pem"
    openssl req -new -key "$1-key.pem" -subj "/CN=$2" -out "$tmp/$1.csr" 2>/dev/null
    cat > "$tmp/$1.ext" <<EOF
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = $3
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
    openssl x509 -req -in "$tmp/$1.csr" -CA ca.pem -CAkey ca-key.pem -CAcreateserial \
        -CAserial "$tmp/ca.srl" -days "$days" -sha256 -extfile "$tmp/$1.ext" -out "$1.pem" 2>/dev/null
}

# Test CA
newkey ca-key.pem
openssl req -x509 -new -key ca-key.pem -sha256 -days "$days" -subj "/CN=oktadpop test CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out ca.pem 2>/dev/null

sign_leaf server 127.0.0.1 "IP:127.0.0.1, DNS:localhost"
sign_leaf wrong-host wrong.example "DNS:wrong.example"

# Self-signed certificate from an unknown CA, valid for the right host.
newkey unknown-ca-key.pem
openssl req -x509 -new -key unknown-ca-key.pem -sha256 -days "$days" -subj "/CN=127.0.0.1" \
    -addext "subjectAltName=IP:127.0.0.1, DNS:localhost" -addext "basicConstraints=critical,CA:FALSE" \
    -out unknown-ca.pem 2>/dev/null

chmod 644 ./*.pem
chmod 600 ./*-key.pem
echo "$out"
