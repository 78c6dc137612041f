//! A table of bad job specs: each gives the expected error (path and reason) and none panics.

#![allow(clippy::unwrap_used)] // Tests unwrap: a panic is the failure report.

use gadus_core::model::*;
use gadus_core::rng::DetRng;

/// What a bad spec must produce.
enum Want {
    /// Decoding fails with a message containing this.
    Decode(&'static str),
    /// Decoding succeeds; validation reports this path with a reason containing the text.
    Field(&'static str, &'static str),
}
use Want::*;

const GOOD_TASK: &str =
    r#"{"Name":"main","Engine":{"Type":"wasm","Params":{"EntryModule":"/m.wasm"}}}"#;

fn job_with(task: &str) -> String {
    format!(r#"{{"Type":"batch","Tasks":[{task}]}}"#)
}

fn task_with(extra: &str) -> String {
    job_with(&format!(
        r#"{{"Name":"main","Engine":{{"Type":"wasm","Params":{{"EntryModule":"/m.wasm"}}}},{extra}}}"#
    ))
}

fn cases() -> Vec<(&'static str, String, Want)> {
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let deep_yaml = format!(
        "Type: batch\nTasks:\n  - Name: m\n    Engine:\n      Type: docker\n      Params:\n        Image: {}1{}\n",
        "[".repeat(300),
        "]".repeat(300)
    );
    let mut nested = String::from("1");
    for _ in 0..40 {
        nested = format!(r#"{{"a":{nested}}}"#);
    }
    vec![
        ("missing engine", job_with(r#"{"Name":"main"}"#), Field("Tasks[0].Engine", "missing")),
        (
            "engine without type",
            job_with(r#"{"Name":"main","Engine":{"Params":{}}}"#),
            Field("Tasks[0].Engine.Type", "missing"),
        ),
        (
            "missing task name",
            job_with(r#"{"Engine":{"Type":"noop"}}"#),
            Field("Tasks[0].Name", "missing"),
        ),
        ("no tasks", r#"{"Type":"batch"}"#.into(), Field("Tasks", "missing")),
        ("missing type", format!(r#"{{"Tasks":[{GOOD_TASK}]}}"#), Field("Type", "missing")),
        (
            "unknown job type",
            format!(r#"{{"Type":"cron","Tasks":[{GOOD_TASK}]}}"#),
            Field("Type", "unknown job type \"cron\""),
        ),
        (
            "bad cpu",
            task_with(r#""Resources":{"CPU":"lots"}"#),
            Field("Tasks[0].Resources.CPU", "invalid quantity"),
        ),
        (
            "negative cpu",
            task_with(r#""Resources":{"CPU":"-1"}"#),
            Field("Tasks[0].Resources.CPU", "negative"),
        ),
        (
            "huge cpu",
            task_with(r#""Resources":{"CPU":"1e17"}"#),
            Field("Tasks[0].Resources.CPU", "out of range"),
        ),
        (
            "bad memory unit",
            task_with(r#""Resources":{"Memory":"12 parsecs"}"#),
            Field("Tasks[0].Resources.Memory", "invalid quantity"),
        ),
        (
            "overflowing memory",
            task_with(r#""Resources":{"Memory":"99999999EiB"}"#),
            Field("Tasks[0].Resources.Memory", "out of range"),
        ),
        (
            "bad disk",
            task_with(r#""Resources":{"Disk":"1..5gb"}"#),
            Field("Tasks[0].Resources.Disk", "invalid quantity"),
        ),
        (
            "fractional gpu",
            task_with(r#""Resources":{"GPU":"1.5"}"#),
            Field("Tasks[0].Resources.GPU", "invalid quantity"),
        ),
        (
            "lower-case env key",
            task_with(r#""Env":{"bad-key":"v"}"#),
            Field("Tasks[0].Env.bad-key", "keys must match [A-Z][A-Z0-9_]*"),
        ),
        (
            "reserved env prefix",
            task_with(r#""Env":{"BACALHAU_JOB_ID":"x"}"#),
            Field("Tasks[0].Env.BACALHAU_JOB_ID", "must not start with BACALHAU_"),
        ),
        (
            "empty env value",
            task_with(r#""Env":{"EMPTY":""}"#),
            Field("Tasks[0].Env.EMPTY", "value must not be empty"),
        ),
        (
            "duplicate input targets",
            task_with(
                r#""InputSources":[{"Target":"/in","Source":{"Type":"ipfs","Params":{"CID":"a"}}},{"Target":"/in","Source":{"Type":"ipfs","Params":{"CID":"b"}}}]"#,
            ),
            Field("Tasks[0].InputSources[1].Target", "duplicate target \"/in\""),
        ),
        (
            "duplicate input aliases",
            task_with(
                r#""InputSources":[{"Alias":"x","Target":"/a","Source":{"Type":"ipfs"}},{"Alias":"x","Target":"/b","Source":{"Type":"ipfs"}}]"#,
            ),
            Field("Tasks[0].InputSources[1].Alias", "duplicate alias"),
        ),
        (
            "input without target",
            task_with(r#""InputSources":[{"Source":{"Type":"ipfs"}}]"#),
            Field("Tasks[0].InputSources[0].Target", "missing"),
        ),
        (
            "input without source",
            task_with(r#""InputSources":[{"Target":"/x"}]"#),
            Field("Tasks[0].InputSources[0].Source", "missing"),
        ),
        (
            "relative input target",
            task_with(r#""InputSources":[{"Target":"../etc","Source":{"Type":"ipfs"}}]"#),
            Field("Tasks[0].InputSources[0].Target", "absolute"),
        ),
        (
            "results without publisher",
            task_with(r#""ResultPaths":[{"Name":"out","Path":"/out"}]"#),
            Field("Tasks[0].Publisher", "required when ResultPaths are set"),
        ),
        (
            "duplicate result names",
            task_with(
                r#""Publisher":{"Type":"local"},"ResultPaths":[{"Name":"o","Path":"/a"},{"Name":"o","Path":"/b"}]"#,
            ),
            Field("Tasks[0].ResultPaths[1].Name", "duplicate name"),
        ),
        (
            "result name with slash",
            task_with(
                r#""Publisher":{"Type":"local"},"ResultPaths":[{"Name":"../o","Path":"/a"}]"#,
            ),
            Field("Tasks[0].ResultPaths[0].Name", "plain folder name"),
        ),
        (
            "bad selector operator",
            format!(
                r#"{{"Type":"batch","Constraints":[{{"Key":"a","Operator":"~"}}],"Tasks":[{GOOD_TASK}]}}"#
            ),
            Decode("Constraints[0].Operator: unknown selector operator"),
        ),
        (
            "in without values",
            format!(
                r#"{{"Type":"batch","Constraints":[{{"Key":"a","Operator":"in"}}],"Tasks":[{GOOD_TASK}]}}"#
            ),
            Field("Constraints[0]", "needs at least one value"),
        ),
        (
            "exists with values",
            format!(
                r#"{{"Type":"batch","Constraints":[{{"Key":"a","Operator":"exists","Values":["x"]}}],"Tasks":[{GOOD_TASK}]}}"#
            ),
            Field("Constraints[0]", "takes no values"),
        ),
        (
            "bad selector key",
            format!(
                r#"{{"Type":"batch","Constraints":[{{"Key":"a b","Operator":"=","Values":["x"]}}],"Tasks":[{GOOD_TASK}]}}"#
            ),
            Field("Constraints[0]", "may contain only"),
        ),
        (
            "negative count",
            format!(r#"{{"Type":"batch","Count":-1,"Tasks":[{GOOD_TASK}]}}"#),
            Field("Count", "must be >= 0"),
        ),
        (
            "count too large",
            format!(r#"{{"Type":"batch","Count":100000000,"Tasks":[{GOOD_TASK}]}}"#),
            Field("Count", "must be <= 10000"),
        ),
        (
            "overflowing count",
            format!(r#"{{"Type":"batch","Count":99999999999999999999,"Tasks":[{GOOD_TASK}]}}"#),
            Decode("Count"),
        ),
        (
            "count > 1 for ops",
            format!(r#"{{"Type":"ops","Count":3,"Tasks":[{GOOD_TASK}]}}"#),
            Field("Count", "cannot set Count > 1"),
        ),
        (
            "negative version",
            format!(r#"{{"Type":"batch","Version":-1,"Tasks":[{GOOD_TASK}]}}"#),
            Decode("Version"),
        ),
        (
            "string count",
            format!(r#"{{"Type":"batch","Count":"two","Tasks":[{GOOD_TASK}]}}"#),
            Decode("Count: invalid type"),
        ),
        (
            "negative timeout",
            task_with(r#""Timeouts":{"ExecutionTimeout":-5}"#),
            Field("Tasks[0].Timeouts.ExecutionTimeout", "must be >= 0"),
        ),
        (
            "timeouts exceed total",
            task_with(
                r#""Timeouts":{"ExecutionTimeout":600,"QueueTimeout":300,"TotalTimeout":60}"#,
            ),
            Field("Tasks[0].Timeouts", "ExecutionTimeout + QueueTimeout exceed TotalTimeout"),
        ),
        (
            "absurd timeout",
            task_with(r#""Timeouts":{"TotalTimeout":9223372036854775807}"#),
            Field("Tasks[0].Timeouts.TotalTimeout", "must be <="),
        ),
        (
            "unknown network type",
            task_with(r#""Network":{"Type":"Wormhole"}"#),
            Decode("Tasks[0].Network.Type: unknown NetworkType"),
        ),
        (
            "domains without HTTP",
            task_with(r#""Network":{"Type":"Full","Domains":["example.com"]}"#),
            Field("Tasks[0].Network.Domains", "only be set with Type HTTP"),
        ),
        (
            "ports with None",
            task_with(r#""Network":{"Type":"None","Ports":[{"Name":"web"}]}"#),
            Field("Tasks[0].Network.Ports", "Host, Bridge or Full"),
        ),
        (
            "docker without image",
            job_with(
                r#"{"Name":"main","Engine":{"Type":"docker","Params":{"Entrypoint":["sh"]}}}"#,
            ),
            Field("Tasks[0].Engine.Params.Image", "missing"),
        ),
        (
            "docker relative workdir",
            job_with(
                r#"{"Name":"main","Engine":{"Type":"docker","Params":{"Image":"x","WorkingDirectory":"tmp"}}}"#,
            ),
            Field("Tasks[0].Engine.Params.WorkingDirectory", "absolute"),
        ),
        (
            "docker entrypoint not a list",
            job_with(
                r#"{"Name":"main","Engine":{"Type":"docker","Params":{"Image":"x","Entrypoint":"sh -c"}}}"#,
            ),
            Field("Tasks[0].Engine.Params", "Entrypoint: invalid type"),
        ),
        (
            "wasm without module",
            job_with(r#"{"Name":"main","Engine":{"Type":"wasm","Params":{}}}"#),
            Field("Tasks[0].Engine.Params.EntryModule", "missing"),
        ),
        (
            "10 MB name",
            format!(
                r#"{{"Type":"batch","Name":"{}","Tasks":[{GOOD_TASK}]}}"#,
                "n".repeat(10_000_000)
            ),
            Field("Name", "longer than 1024 bytes"),
        ),
        (
            "oversized body",
            format!(r#"{{"Type":"batch","Name":"{}"}}"#, "n".repeat(11 * 1024 * 1024)),
            Decode("the limit is"),
        ),
        (
            "deeply nested params",
            task_with(&format!(
                r#""Meta":{{}},"Publisher":{{"Type":"noop","Params":{{"x":{nested}}}}}"#
            )),
            Field("Tasks[0].Publisher.Params", "nested deeper than 32"),
        ),
        (
            "nesting beyond the parser limit",
            task_with(&format!(r#""Publisher":{{"Type":"noop","Params":{{"x":{deep}}}}}"#)),
            Decode("recursion limit"),
        ),
        ("yaml nesting beyond the parser limit", deep_yaml, Decode("recursion limit")),
        // Regression (issue 12, defect 10): 100,000 levels of flow nesting (200 KB) took 20 s
        // in the YAML parser; refused by a linear pre-scan.
        (
            "yaml flow nesting of 200 KB",
            format!(
                "Type: batch\nTasks:\n  - Name: m\n    Engine: {{Type: noop, Params: {{x: {}{}}}}}\n",
                "[".repeat(100_000),
                "]".repeat(100_000)
            ),
            Decode("nested deeper than 512 levels"),
        ),
        (
            "yaml flow mappings nested 40,000 deep",
            format!("Type: batch\nMeta: {}1{}\n", "{a: ".repeat(40_000), "}".repeat(40_000)),
            Decode("nested deeper than 512 levels"),
        ),
        ("malformed json", r#"{"Type":"batch","#.into(), Decode("EOF")),
        ("not an object", "[1,2,3]".into(), Decode("invalid type")),
        (
            "trailing garbage",
            format!(r#"{{"Type":"batch","Tasks":[{GOOD_TASK}]}} x"#),
            Decode("trailing characters"),
        ),
        (
            "yaml alias bomb",
            format!(
                "{}Type: batch\nTasks:\n  - Name: m\n    Engine: {{Type: noop, Params: {{x: *i}}}}\n",
                "a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\ng: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\nh: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]\ni: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]\n"
            ),
            Decode("repetition limit"),
        ),
        (
            "control character in yaml",
            "Type: a\u{0}b\n".into(),
            Decode("control characters are not allowed"),
        ),
        (
            "null byte in name",
            format!(r#"{{"Type":"batch","Name":"a\u0000b","Tasks":[{GOOD_TASK}]}}"#),
            Field("Name", "null characters"),
        ),
        // Regression (issue 12, defect 2): a service job's ID became `gadus get`'s folder
        // name, and `/` and `..` were accepted.
        (
            "service ID climbing out of a folder",
            format!(r#"{{"Type":"service","ID":"../../.ssh","Tasks":[{GOOD_TASK}]}}"#),
            Field("ID", "must start with a letter or a digit"),
        ),
        (
            "service ID with a slash",
            format!(r#"{{"Type":"daemon","ID":"a/b","Tasks":[{GOOD_TASK}]}}"#),
            Field("ID", "may hold only"),
        ),
        (
            "namespace with dot-dot",
            format!(r#"{{"Type":"batch","Namespace":"..","Tasks":[{GOOD_TASK}]}}"#),
            Field("Namespace", "must start with a letter or a digit"),
        ),
        (
            "namespace with a percent escape",
            format!(r#"{{"Type":"batch","Namespace":"a%2F..","Tasks":[{GOOD_TASK}]}}"#),
            Field("Namespace", "may hold only"),
        ),
        (
            "reserved result name",
            task_with(
                r#""Publisher":{"Type":"local"},"ResultPaths":[{"Name":"stdout","Path":"/a"}]"#,
            ),
            Field("Tasks[0].ResultPaths[0].Name", "reserved"),
        ),
    ]
}

fn run(input: &str) -> Result<Vec<FieldError>, DecodeError> {
    let mut job = Job::from_file_bytes(input.as_bytes())?;
    job.normalize(&mut DetRng::new(1));
    Ok(match job.validate() {
        Ok(()) => vec![],
        Err(e) => e.0,
    })
}

#[test]
fn every_bad_spec_gives_its_error() {
    let cases = cases();
    assert!(cases.len() >= 30, "the table must hold at least 30 cases");
    let mut failures = Vec::new();
    for (name, input, want) in cases {
        let got = std::panic::catch_unwind(|| run(&input));
        let Ok(got) = got else {
            failures.push(format!("{name}: PANICKED"));
            continue;
        };
        match (&want, &got) {
            (Decode(text), Err(e)) if e.to_string().contains(text) => {}
            (Field(path, text), Ok(errs))
                if errs.iter().any(|e| e.path == *path && e.reason.contains(text)) => {}
            _ => {
                let shown = match &got {
                    Ok(errs) => errs.iter().map(|e| e.to_string()).collect::<Vec<_>>().join(" | "),
                    Err(e) => format!("decode error: {e}"),
                };
                let wanted = match want {
                    Decode(t) => format!("decode error containing {t:?}"),
                    Field(p, t) => format!("{p}: …{t}…"),
                };
                failures.push(format!(
                    "{name}: wanted {wanted}, got {}",
                    &shown[..shown.len().min(300)]
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{} cases failed:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn invalid_utf8_is_a_decode_error() {
    for bytes in [&b"{\"Type\":\"\xff\xfe\"}"[..], &b"Type: \xc3\x28\n"[..]] {
        let e = Job::from_file_bytes(bytes).expect_err("invalid UTF-8 must not decode");
        let msg = e.to_string().to_lowercase();
        assert!(msg.contains("utf-8") || msg.contains("unicode"), "{e}");
    }
}

#[test]
fn validate_reports_every_problem_at_once() {
    let input = r#"{"Type":"batch","Count":-2,"Tasks":[{"Env":{"x":"1"},
        "Resources":{"CPU":"fast","Memory":"lots"},
        "Timeouts":{"ExecutionTimeout":10,"TotalTimeout":5}}]}"#;
    let errs = run(input).unwrap();
    let paths: Vec<_> = errs.iter().map(|e| e.path.as_str()).collect();
    for p in [
        "Count",
        "Tasks[0].Name",
        "Tasks[0].Engine",
        "Tasks[0].Env.x",
        "Tasks[0].Resources.CPU",
        "Tasks[0].Resources.Memory",
        "Tasks[0].Timeouts",
    ] {
        assert!(paths.contains(&p), "missing {p} in {paths:?}");
    }
}
