use super::*;

fn parse(text: &str) -> Result<Plan> {
    Plan::parse(Path::new("plan.toml"), text, Path::new("/"))
}

fn error(text: &str) -> String {
    parse(text).expect_err("plan should be refused").to_string()
}

#[test]
fn a_full_plan_with_defaults() {
    let plan = parse(
        r#"
[defaults]
timeout = "2m"
retries = 2
env = { A = "1", B = "2" }
temp = ["tmp/shared"]

[[worker]]
name = "gen"
cmd = ["sh", "-c", "true"]
kind = "file"
result_file = "out.json"
timeout = 5

[[worker]]
name = "build"
cmd = ["true"]
after = ["gen"]
env = { B = "3" }
temp = ["tmp/build"]
fail_on_crash = false
retries = 0
cwd = "tmp"
"#,
    )
    .expect("valid plan");
    let [gen_, build] = &plan.workers[..] else {
        panic!("two workers")
    };
    assert_eq!(gen_.kind, Kind::File);
    assert_eq!(gen_.result_file, Some(PathBuf::from("/out.json")));
    assert_eq!(gen_.timeout, Some(Duration::from_secs(5)));
    assert_eq!(gen_.retries, 2);
    assert!(gen_.program.is_absolute());
    assert_eq!(build.after, [0]);
    assert_eq!(build.timeout, Some(Duration::from_secs(120)));
    assert_eq!(build.retries, 0);
    assert!(!build.fail_on_crash);
    assert_eq!(build.env.get("A").map(String::as_str), Some("1"));
    assert_eq!(build.env.get("B").map(String::as_str), Some("3"));
    assert_eq!(build.cwd, PathBuf::from("/tmp"));
    assert_eq!(
        build.temp,
        [
            PathBuf::from("/tmp/tmp/shared"),
            PathBuf::from("/tmp/tmp/build")
        ]
    );
}

#[test]
fn unknown_keys_name_the_line() {
    let e = error("[[worker]]\nname = \"a\"\ncmd = [\"true\"]\ncomand = 1\n");
    assert!(
        e.starts_with("plan.toml:4:1: unknown field `comand`"),
        "{e}"
    );
    let e = error("[defaults]\nname = \"x\"\n[[worker]]\nname = \"a\"\ncmd = [\"true\"]\n");
    assert!(e.starts_with("plan.toml:2:1: unknown field `name`"), "{e}");
    let e = error("[job]\n");
    assert!(e.contains("unknown field `job`"), "{e}");
}

#[test]
fn syntax_errors_are_one_line_with_position() {
    let e = error("[[worker]]\nname = \"a\ncmd = [\"true\"]\n");
    assert!(e.starts_with("plan.toml:2:"), "{e}");
    assert!(!e.contains('\n'), "{e}");
}

#[test]
fn duplicates_unknown_after_and_cycles() {
    let e = error(
        "[[worker]]\nname = \"a\"\ncmd = [\"true\"]\n[[worker]]\nname = \"a\"\ncmd = [\"true\"]\n",
    );
    assert_eq!(e, "plan.toml:5:8: duplicate worker name `a`");
    let e = error("[[worker]]\nname = \"a\"\ncmd = [\"true\"]\nafter = [\"zz\"]\n");
    assert_eq!(
        e,
        "plan.toml:4:10: worker `a`: unknown worker `zz` in `after`"
    );
    let e = error(
        "[[worker]]\nname = \"a\"\ncmd = [\"true\"]\nafter = [\"c\"]\n\
         [[worker]]\nname = \"b\"\ncmd = [\"true\"]\nafter = [\"a\"]\n\
         [[worker]]\nname = \"c\"\ncmd = [\"true\"]\nafter = [\"b\"]\n",
    );
    assert_eq!(e, "plan.toml:2:8: cycle in `after`: a -> c -> b -> a");
    let e = error("[[worker]]\nname = \"self\"\ncmd = [\"true\"]\nafter = [\"self\"]\n");
    assert!(e.ends_with("cycle in `after`: self -> self"), "{e}");
}

#[test]
fn bad_values() {
    let e = error("[[worker]]\nname = \"a\"\ncmd = [\"no-such-program-xyz\"]\n");
    assert_eq!(
        e,
        "plan.toml:3:7: worker `a`: executable `no-such-program-xyz` not found on PATH"
    );
    // A path is looked for when the worker starts (an earlier worker may build it).
    let plan = parse("[[worker]]\nname = \"a\"\ncmd = [\"./missing.sh\"]\n").unwrap();
    assert_eq!(plan.workers[0].program, PathBuf::from("/./missing.sh"));
    let e = error("[[worker]]\nname = \"a\"\ncmd = [\"true\", \"a\\u0000\"]\n");
    assert!(
        e.ends_with("`cmd` argument \"a\\0\" holds a NUL byte"),
        "{e}"
    );
    let e = error("[[worker]]\nname = \"a\"\ncmd = [\"true\"]\nenv = { \"A=B\" = \"1\" }\n");
    assert!(e.ends_with("`env` variable name \"A=B\" holds `=`"), "{e}");
    let e = error("[[worker]]\nname = \"a\"\ncmd = [\"true\"]\ntimeout = 0\n");
    assert!(
        e.ends_with("invalid duration `0`: too small (at least 1ms)"),
        "{e}"
    );
    let e = error("[[worker]]\nname = \"a\"\ncmd = []\n");
    assert_eq!(e, "plan.toml:3:7: worker `a`: `cmd` is empty");
    let e = error("[[worker]]\nname = \"a\"\ncmd = [\"true\"]\ntimeout = \"soon\"\n");
    assert!(
        e.starts_with("plan.toml:4:11: invalid duration `soon`"),
        "{e}"
    );
    let e = error("[[worker]]\nname = \"a\"\ncmd = [\"true\"]\nkind = \"file\"\n");
    assert!(e.ends_with("`kind = \"file\"` needs `result_file`"), "{e}");
    let e = error("[[worker]]\nname = \"a\"\ncmd = [\"true\"]\nkind = \"socket\"\n");
    assert!(
        e.starts_with("plan.toml:4:8: unknown variant `socket`"),
        "{e}"
    );
    let e = error("[[worker]]\nname = \"a b\"\ncmd = [\"true\"]\n");
    assert!(
        e.starts_with("plan.toml:2:8: worker name `a b` may only contain"),
        "{e}"
    );
    let e = error("[[worker]]\nname = \"a\"\ncmd = [\"true\"]\ncwd = \"no/such/dir\"\n");
    assert!(e.ends_with("`cwd` `no/such/dir` is not a directory"), "{e}");
    let e = error("");
    assert_eq!(e, "plan.toml: the plan has no [[worker]] table");
}

#[test]
fn unreadable_file_names_the_file() {
    let e = Plan::load(Path::new("/no/such/plan.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("/no/such/plan.toml: cannot read the plan"),
        "{e}"
    );
}

#[test]
fn single_command() {
    let plan = Plan::single(&["sh".into(), "-c".into(), "true".into()], Path::new("/")).unwrap();
    assert_eq!(plan.workers[0].name, "sh");
    let e = Plan::single(&["no-such-program-xyz".into()], Path::new("/")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "executable `no-such-program-xyz` not found on PATH"
    );
}
