#!/bin/sh
# render-acl.sh TEMPLATE SECRETS_DIR OUTPUT
#
# Adds each user's password hashes to an ACL file printed by `redismedian acl` (such as
# deploy/redis/users.acl) and writes the result to OUTPUT (mode 600), for redis-server's
# `aclfile` / `--aclfile`.  For every `user NAME ...` line, each non-empty line of the file
# SECRETS_DIR/NAME becomes `#<sha256 of the password>`: Redis accepts any of them, so a
# password rotation can overlap (append the new password, switch the clients, drop the old
# line; clients use the last line).  Users that are `off` need no secret.  Passwords are
# never printed, and only their hashes reach OUTPUT.
set -eu
if [ $# -ne 3 ]; then
  echo "usage: $0 TEMPLATE SECRETS_DIR OUTPUT" >&2
  exit 2
fi
template=$1 secrets=$2 out=$3
umask 077
tmp="$out.tmp.$$"
trap 'rm -f "$tmp"' EXIT
: >"$tmp"
cr=$(printf '\r')
while IFS= read -r line || [ -n "$line" ]; do
  case $line in
    "user "*) ;;
    *[![:space:]]*) echo "render-acl: $template: not a 'user' line: ${line%% *} ..." >&2; exit 1 ;;
    *) continue ;;
  esac
  name=$(printf '%s\n' "$line" | cut -d' ' -f2)
  case " $line " in
    *" off "*) printf '%s\n' "$line" >>"$tmp"; continue ;;
  esac
  file="$secrets/$name"
  if [ ! -r "$file" ]; then
    echo "render-acl: no password for Redis user $name: $file is missing or unreadable" >&2
    exit 1
  fi
  hashes=""
  while IFS= read -r pw || [ -n "$pw" ]; do
    pw=${pw%"$cr"}
    case $pw in *[![:space:]]*) ;; *) continue ;; esac
    hashes="$hashes #$(printf '%s' "$pw" | sha256sum | cut -d' ' -f1)"
  done <"$file"
  if [ -z "$hashes" ]; then
    echo "render-acl: $file holds no password for Redis user $name" >&2
    exit 1
  fi
  printf '%s%s\n' "$line" "$hashes" >>"$tmp"
done <"$template"
mv "$tmp" "$out"
trap - EXIT
echo "render-acl: wrote $out" >&2
