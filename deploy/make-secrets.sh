#!/bin/sh
# make-secrets.sh [USERS_ACL [SECRETS_DIR]]
#
# Creates a random password for every Redis user of USERS_ACL (default: redis/users.acl next
# to this script) that has none yet, one file per user in SECRETS_DIR (default: secrets/ next
# to this script), and the token of the page server (`redismedian web`) in SECRETS_DIR/web-token.
# Existing files are kept: run it again after adding users.  Prints the files it created, never
# the passwords.
#
# The folder is mode 700 (only its owner gets in); the files are 644 because docker compose
# bind-mounts each secret with the host file's mode, and the components run as an
# unprivileged user inside their containers.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
acl=${1:-$here/redis/users.acl}
dir=${2:-$here/secrets}
mkdir -p "$dir"
chmod 700 "$dir"
umask 022
for user in $(sed -n 's/^user \([^ ]*\) on .*/\1/p' "$acl") web-token; do
  file="$dir/$user"
  [ -e "$file" ] && continue
  pw=$(LC_ALL=C tr -dc 'A-Za-z0-9' </dev/urandom | head -c 32)
  printf '%s\n' "$pw" >"$file"
  echo "make-secrets: created $file"
done
