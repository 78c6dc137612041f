# gadus's password login policy (builtin:password, for an `ask` authentication method).
#
# The users are the operator's, in `API.Auth.Methods.<name>.UsersFile`: a JSON object of
# username -> [scrypt hash, salt], the pair `gadus auth hash-password` prints (Bacalhau's
# `userlist` format). The node hands that file to this policy as `data.gadus.users`. A user
# who gives a listed name and its password gets a token for 30 days naming them: every
# namespace readable and downloadable, their own namespace fully.
package bacalhau.authn

import rego.v1

schema := {
	"$schema": "http://json-schema.org/draft-07/schema#",
	"type": "object",
	"properties": {
		"username": {"type": "string"},
		"password": {"type": "string", "writeOnly": true},
	},
	"required": ["username", "password"],
}

read := 1

write := 2

download := 4

cancel := 8

ttl_seconds := 30 * 24 * 3600

now_seconds := floor(time.now_ns() / 1000000000)

valid_user := user if {
	user := input.ask.username
	is_string(user)
	is_string(input.ask.password)
	[hash, salt] := data.gadus.users[user]
	hash == scrypt(input.ask.password, salt)
}

token := io.jwt.encode_sign(
	{"typ": "JWT", "alg": "RS256"},
	{
		"iss": input.nodeId,
		"sub": valid_user,
		"aud": [input.nodeId],
		"iat": now_seconds,
		"exp": now_seconds + ttl_seconds,
		"ns": {
			"*": bits.or(read, download),
			valid_user: bits.or(bits.or(read, write), bits.or(download, cancel)),
		},
	},
	input.signingKey,
)
