//! The command line around the lifecycle: spec, features, logging; and which binary the
//! tests run.

mod common;

use std::fs;

use common::*;

#[test]
fn spec_writes_a_valid_default_and_refuses_to_overwrite() {
    let dir = std::env::temp_dir().join(unique("bh-spec"));
    fs::create_dir_all(&dir).unwrap();
    ok(&output(
        std::process::Command::new(bin())
            .args(["spec", "--bundle"])
            .arg(&dir),
    ));
    let v: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(v["ociVersion"], "1.3.0");
    assert_eq!(v["root"]["path"], "rootfs");
    assert_eq!(v["process"]["args"][0], "sh");
    // runc's spec set, and bulkhead's default seccomp profile for it.
    assert_eq!(
        v["process"]["capabilities"]["bounding"],
        serde_json::json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"])
    );
    let spec_caps = oci::SPEC_CAPS.map(String::from);
    assert_eq!(
        v["linux"]["seccomp"],
        serde_json::to_value(seccomp::default_profile::profile(&spec_caps)).unwrap()
    );
    assert!(v["linux"]["maskedPaths"]
        .as_array()
        .unwrap()
        .contains(&"/sys/kernel".into()));
    let e = fails(&output(
        std::process::Command::new(bin())
            .args(["spec", "--bundle"])
            .arg(&dir),
    ));
    assert!(e.contains("already exists"), "{e}");
    fs::remove_file(dir.join("config.json")).unwrap();
    ok(&output(
        std::process::Command::new(bin())
            .args(["spec", "--rootless", "--bundle"])
            .arg(&dir),
    ));
    let v: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("config.json")).unwrap()).unwrap();
    assert!(v["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n["type"] == "user"));
    assert_eq!(v["linux"]["uidMappings"][0]["hostID"], 0);
    assert!(v["linux"]["seccomp"].is_object());
    // "unconfined": no filter at all; a missing profile file: one line, nothing written.
    fs::remove_file(dir.join("config.json")).unwrap();
    ok(&output(
        std::process::Command::new(bin())
            .args(["spec", "--seccomp-profile", "unconfined", "--bundle"])
            .arg(&dir),
    ));
    let v: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("config.json")).unwrap()).unwrap();
    assert!(v["linux"].get("seccomp").is_none(), "{}", v["linux"]);
    fs::remove_file(dir.join("config.json")).unwrap();
    let e = fails(&output(
        std::process::Command::new(bin())
            .args(["spec", "--seccomp-profile", "/no/such.json", "--bundle"])
            .arg(&dir),
    ));
    assert!(
        e.contains("--seccomp-profile /no/such.json: no such file"),
        "{e}"
    );
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(!dir.join("config.json").exists());
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn probe_bad_input_fails_cleanly() {
    let e = fails(&output(std::process::Command::new(bin()).args([
        "probe",
        "--only",
        "no-such-probe",
    ])));
    assert!(e.contains("--only no-such-probe: no such probe"), "{e}");
    assert_eq!(e.lines().count(), 1, "{e}");
    let e = fails(&output(std::process::Command::new(bin()).args([
        "probe",
        "--compare",
        "no-such-runtime",
    ])));
    // Refused before anything is created.
    assert_eq!(
        e.trim(),
        "bulkhead: --compare no-such-runtime: not found in PATH"
    );
}

#[test]
fn features_lists_what_is_implemented() {
    let out = ok(&output(std::process::Command::new(bin()).arg("features")));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["ociVersionMax"], "1.3.0");
    let names = |p: &serde_json::Value| -> Vec<String> {
        p.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(&v["hooks"]).len(), 6);
    assert_eq!(
        names(&v["linux"]["namespaces"]),
        ["pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time"]
    );
    let opts = names(&v["mountOptions"]);
    for o in ["ro", "rbind", "rro", "rprivate", "nosymfollow", "tmpcopyup"] {
        assert!(opts.contains(&o.to_string()), "{o}");
    }
    // Not implemented, so not claimed:
    assert!(!opts.contains(&"idmap".to_string()));
    assert_eq!(v["linux"]["mountExtensions"]["idmap"]["enabled"], false);
    assert_eq!(v["linux"]["netDevices"]["enabled"], false);
    assert_eq!(v["linux"]["intelRdt"]["enabled"], false);
    assert_eq!(v["linux"]["cgroup"]["systemd"], false);
    assert_eq!(v["linux"]["seccomp"]["enabled"], true);
    assert!(names(&v["linux"]["seccomp"]["actions"]).contains(&"SCMP_ACT_NOTIFY".to_string()));
    assert!(names(&v["linux"]["capabilities"]).contains(&"CAP_SYS_ADMIN".to_string()));
    // What works rootless, and what does not.
    let a = &v["annotations"];
    assert_eq!(a["org.bulkhead.rootless"], "true");
    for k in [
        "state",
        "idmap",
        "cgroup",
        "devices",
        "sysfs",
        "unsupported",
        "sandbox",
    ] {
        assert!(
            a[format!("org.bulkhead.rootless.{k}")].is_string(),
            "org.bulkhead.rootless.{k} missing: {a}"
        );
    }
    assert!(a["org.bulkhead.rootless.unsupported"]
        .as_str()
        .unwrap()
        .contains("cgroup v1"));
}

#[test]
fn errors_go_to_the_json_log_as_runc_writes_them() {
    let rt = Rt::new();
    let log = std::env::temp_dir().join(unique("bh-log"));
    let e = fails(&output(rt.cmd().arg("--log").arg(&log).args([
        "--log-format",
        "json",
        "state",
        "no-such-container",
    ])));
    assert!(e.contains("does not exist"));
    let text = fs::read_to_string(&log).unwrap();
    let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(last["level"], "error");
    assert!(last["msg"].as_str().unwrap().contains("no-such-container"));
    assert!(last["time"].as_str().unwrap().ends_with('Z'));
    fs::remove_file(&log).unwrap();
}

#[test]
fn top_level_options_also_follow_the_subcommand() {
    let rt = Rt::new();
    // One container in this root, so `list` shows which root it read.
    let bundle = Bundle::new("opts", &["sleep", "30"]);
    let id = unique("opts");
    ok(&rt.create(&id, &bundle));
    let root = rt.root.to_str().unwrap();
    for args in [
        vec!["--root", root, "list", "-q"],
        vec!["list", "--root", root, "-q"],
        vec!["ls", "-q", &format!("--root={root}")],
        vec![
            "--debug",
            "list",
            "--log-format",
            "json",
            "--root",
            root,
            "-q",
        ],
    ] {
        let out = output(std::process::Command::new(bin()).args(&args));
        assert_eq!(ok(&out).trim(), id, "{args:?}");
    }
    // Values too: the log options after the subcommand reach the logger.
    let log = std::env::temp_dir().join(unique("bh-log"));
    let e = fails(&output(
        std::process::Command::new(bin())
            .args(["state", "no-such-container", "--log"])
            .arg(&log)
            .args(["--log-format", "json", "--root", root]),
    ));
    assert!(e.contains("does not exist"), "{e}");
    let text = fs::read_to_string(&log).unwrap();
    let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(last["level"], "error");
    fs::remove_file(&log).unwrap();
}

#[test]
fn systemd_cgroup_flag_is_refused_clearly() {
    let e = fails(&output(
        std::process::Command::new(bin()).args(["--systemd-cgroup", "list"]),
    ));
    assert!(e.contains("--systemd-cgroup"), "{e}");
}

/// test.sh runs the host-side tests a second time with BULKHEAD_BIN naming the static
/// release binary: that pass must run that binary, not this build's.
#[test]
fn bulkhead_bin_names_the_binary_under_test() {
    match std::env::var("BULKHEAD_BIN") {
        Ok(b) => {
            assert_eq!(bin(), b);
            let static_elf = vmruntime::image::is_static_elf(std::path::Path::new(&b)).unwrap();
            assert!(static_elf, "{b} is not statically linked");
        }
        Err(_) => assert_eq!(bin(), env!("CARGO_BIN_EXE_bulkhead")),
    }
}
