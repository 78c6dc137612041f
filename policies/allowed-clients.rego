# gadus's allow-list login policy (builtin:allowed-clients, for a `challenge` method).
#
# Only the client keys the operator lists in `API.Auth.Methods.<name>.AllowedClients` (client
# IDs, as `gadus id` prints them; the node hands them to this policy as
# `data.gadus.allowed_clients`) get a token, after signing a fresh challenge of this node.
# Any other key is refused. Tokens last 30 days: every namespace readable and downloadable,
# the client's own namespace fully.
package bacalhau.authn

import rego.v1

read := 1

write := 2

download := 4

cancel := 8

ttl_seconds := 30 * 24 * 3600

now_seconds := floor(time.now_ns() / 1000000000)

allowed_client := input.clientId if input.clientId in data.gadus.allowed_clients

token := io.jwt.encode_sign(
	{"typ": "JWT", "alg": "RS256"},
	{
		"iss": input.nodeId,
		"sub": allowed_client,
		"aud": [input.nodeId],
		"iat": now_seconds,
		"exp": now_seconds + ttl_seconds,
		"ns": {
			"*": bits.or(read, download),
			allowed_client: bits.or(bits.or(read, write), bits.or(download, cancel)),
		},
	},
	input.signingKey,
)
