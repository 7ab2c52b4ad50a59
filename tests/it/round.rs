//! The one round (src/sync/round.rs) seen from outside: `once` and `run`
//! run the same config's hooks in config order; a reload with an unchanged
//! config keeps change detection.

use std::fmt::Write as _;

use nix::sys::signal::Signal;

use crate::support::harness::{Harness, read, stderr};

/// Three files, each with its own hook, the hooks declared in an order that
/// is neither alphabetical nor reverse-alphabetical; each hook appends its
/// name to `order.log`.
fn three_hook_groups(h: &Harness) -> std::path::PathBuf {
    let out = h.path("out");
    let log = h.path("order.log");
    h.emu.set_secret("s", "v1");
    let mut body =
        String::from("[agent]\ninterval = \"1h\"\njitter = \"0s\"\n\n[secrets]\ns = \"s\"\n");
    for name in ["mike", "alpha", "zulu"] {
        write!(
            body,
            "\n[[file]]\npath = \"{out}/{name}.txt\"\ncontents = \"{name} {{{{ secrets.s }}}}\"\non_change = \"echo {name} >> {log}\"\n",
            out = out.display(),
            log = log.display(),
        )
        .unwrap();
    }
    h.write_config(&body)
}

fn hook_order(h: &Harness) -> Vec<String> {
    read(&h.path("order.log"))
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_and_run_run_hooks_in_config_order() {
    let config_order = ["mike", "alpha", "zulu"];

    let h = Harness::new().await;
    let config = three_hook_groups(&h);
    let out = h.once(&config, &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(hook_order(&h), config_order, "once");

    let h = Harness::new().await;
    let config = three_hook_groups(&h);
    let mut agent = h.spawn_agent(&config, &[]);
    let line = agent.round().await;
    assert!(
        line.contains("ok=true") && line.contains("hooks_run=3"),
        "{line}"
    );
    assert_eq!(hook_order(&h), config_order, "run");
    agent.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_with_an_unchanged_config_keeps_change_detection() {
    let h = Harness::new().await;
    let out = h.path("out");
    let mut body = String::from("[agent]\ninterval = \"1s\"\njitter = \"0s\"\n\n[secrets]\n");
    for i in 0..5 {
        h.emu.set_secret(&format!("sec-{i}"), &format!("value-{i}"));
        writeln!(body, "s{i} = \"sec-{i}\"").unwrap();
    }
    for i in 0..5 {
        write!(
            body,
            "\n[[file]]\npath = \"{}/s{i}.txt\"\ncontents = \"{{{{ secrets.s{i} }}}}\"\n",
            out.display()
        )
        .unwrap();
    }
    let config = h.write_config(&body);
    let mut agent = h.spawn_agent(&config, &[]);
    agent.round().await;
    // Bundles fetched within CHANGE_MARGIN_SECS of their update are fetched
    // once more before they are trusted: wait (bounded) for a round without
    // a GET.
    let mut settled = false;
    for _ in 0..6 {
        h.emu.reset_counters();
        let line = agent.round().await;
        assert!(line.contains("ok=true"), "{line}");
        if h.emu.counters().kv_gets == 0 {
            settled = true;
            break;
        }
    }
    assert!(settled, "every round still GETs");
    h.emu.reset_counters();
    agent.signal(Signal::SIGHUP);
    agent
        .wait_for("config reloaded", std::time::Duration::from_secs(30))
        .await;
    let line = agent.round().await;
    assert!(line.contains("ok=true"), "{line}");
    let c = h.emu.counters();
    assert!(
        c.kv_lists >= 1 && c.kv_gets == 0 && c.kv_requests == c.kv_lists && c.tokens_issued == 0,
        "after SIGHUP with an unchanged config: list requests only; {c:?}"
    );
    agent.terminate().await;
}
