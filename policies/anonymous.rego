# gadus's default access policy (builtin:anonymous).
#
# Bacalhau's anonymous mode, with ownership: anyone may read and submit, as Bacalhau's
# default allows, but a job submitted with a token belongs to the token's subject, and only
# they may stop it, update it (resubmit under its ID), read its logs or fetch its results.
# A caller with a token this node did not sign (or an expired one) is refused (401), so the
# CLI logs in again. The node gives `input.job` (`id`, `namespace`, `owner`) for requests that
# name an existing job (by its path, a result archive's execution, or a submission's ID);
# `owner` is empty for jobs submitted without a token. Outputs (run output, published
# results) of an owned job are hidden from others by the node itself, like its Env values.
package bacalhau.authz

import rego.v1

default allow := false

default token_valid := false

# The subject of a valid token this node issued; "" for a caller without one.
default caller := ""

caller := claims.sub if claims.sub

claims := c if {
	some header in input.http.headers.Authorization
	startswith(header, "Bearer ")
	[valid, _, c] := io.jwt.decode_verify(trim_prefix(header, "Bearer "), input.constraints)
	valid
}

token_valid if not input.http.headers.Authorization

token_valid if claims

# Only what reads a job's public record is open to others than its owner.
private_to_owner if input.http.method != "GET"

private_to_owner if input.http.path[count(input.http.path) - 1] in {"logs", "results"}

# A result archive of the local publisher (/results/<execution>.tar.gz).
private_to_owner if input.http.path[0] == "results"

anothers_job if {
	input.job.owner != ""
	input.job.owner != caller
}

allow if {
	token_valid
	not anothers_job
}

allow if {
	token_valid
	anothers_job
	not private_to_owner
}
