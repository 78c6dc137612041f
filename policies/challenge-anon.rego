# gadus's default policy for a `challenge` authentication method (builtin:challenge-anon).
#
# Any client that proves it holds its key (it signed a fresh challenge of this node) gets a
# token naming it: `sub` is its client ID. The token is valid for 30 days, in seconds as
# RFC 7519 says (Bacalhau's example policy writes microseconds). `ns` carries Bacalhau's
# namespace permission bits, so Bacalhau's access policies read it unchanged: every namespace
# readable and downloadable, the client's own namespace fully.
package bacalhau.authn

import rego.v1

read := 1

write := 2

download := 4

cancel := 8

ttl_seconds := 30 * 24 * 3600

now_seconds := floor(time.now_ns() / 1000000000)

token := io.jwt.encode_sign(
	{"typ": "JWT", "alg": "RS256"},
	{
		"iss": input.nodeId,
		"sub": input.clientId,
		"aud": [input.nodeId],
		"iat": now_seconds,
		"exp": now_seconds + ttl_seconds,
		"ns": {
			"*": bits.or(read, download),
			input.clientId: bits.or(bits.or(read, write), bits.or(download, cancel)),
		},
	},
	input.signingKey,
)
