#!/bin/sh
# Entry point of the Redis container (docker-compose.yml): render the ACL file with the hashes
# of the passwords in the secrets folder, then start Redis through the image's own entry point
# (which drops root privileges) with redis.conf and that ACL file.  Extra arguments go to
# redis-server.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
secrets=${REDISMEDIAN_SECRETS_DIR:-/run/secrets}
acl=${REDISMEDIAN_ACL_OUT:-/tmp/redismedian-users.acl}
sh "$here/render-acl.sh" "$here/users.acl" "$secrets" "$acl"
if [ "$(id -u)" = 0 ] && id redis >/dev/null 2>&1; then
  chown redis "$acl"
fi
exec docker-entrypoint.sh redis-server "$here/redis.conf" --aclfile "$acl" "$@"
