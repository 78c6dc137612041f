# gadus's "no anonymous access" policy (builtin:no-anon, for API.Auth.AccessPolicyPath).
#
# Only callers holding a valid token this node issued may use the API. Logging in, and the
# two endpoints a client asks before it can (version and liveness), stay open.
package bacalhau.authz

import rego.v1

default allow := false

default token_valid := false

open_paths := {
	["api", "v1", "agent", "version"],
	["api", "v1", "agent", "alive"],
	["api", "v1", "healthz"],
	["api", "v1", "livez"],
}

allow if input.http.path in open_paths

allow if {
	input.http.path[0] == "api"
	input.http.path[1] == "v1"
	input.http.path[2] == "auth"
}

allow if token_valid

token_valid if {
	some header in input.http.headers.Authorization
	startswith(header, "Bearer ")
	[valid, _, _] := io.jwt.decode_verify(trim_prefix(header, "Bearer "), input.constraints)
	valid
}
