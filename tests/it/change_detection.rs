//! The agent's list-based change detection (src/sync/changes.rs) against
//! the emulator's request counters: unchanged rounds cost list pages only,
//! a rotation costs one GET, a deleted secret fails its alias from the list
//! alone, and a forbidden list falls back to per-secret GETs.

use std::fmt::Write as _;

use crate::support::harness::{Agent, Harness, read};
use kvsync_fake::{Counters, Fault, Service};

/// Rounds allowed before the cache is certain (bundles fetched within
/// `CHANGE_MARGIN_SECS` of their `updated` are fetched once more).
const SETTLE_ROUNDS: usize = 6;

/// `n` secrets `sec-{i}`, one file each, 1 s interval.
fn config(h: &Harness, n: usize) -> std::path::PathBuf {
    let out = h.path("out");
    let mut body = String::from("[agent]\ninterval = \"1s\"\njitter = \"0s\"\n\n[secrets]\n");
    for i in 0..n {
        h.emu.set_secret(&format!("sec-{i}"), &format!("value-{i}"));
        writeln!(body, "s{i} = \"sec-{i}\"").unwrap();
    }
    for i in 0..n {
        write!(
            body,
            "\n[[file]]\npath = \"{}/s{i}.txt\"\ncontents = \"{{{{ secrets.s{i} }}}}\"\n",
            out.display()
        )
        .unwrap();
    }
    h.write_config(&body)
}

/// Counters of the next full round (reset right after a round ended; the
/// next one starts an interval later).
async fn next_round(h: &Harness, agent: &mut Agent) -> (String, Counters) {
    h.emu.reset_counters();
    let line = agent.round().await;
    (line, h.emu.counters())
}

/// List requests of any outcome.
fn lists(c: &Counters) -> u64 {
    c.by_path.get("/secrets").copied().unwrap_or(0)
}

/// Wait (bounded) for a round that made no GET.
async fn settle(h: &Harness, agent: &mut Agent) -> Counters {
    for _ in 0..SETTLE_ROUNDS {
        let (line, c) = next_round(h, agent).await;
        assert!(line.contains("ok=true"), "{line}");
        if c.kv_gets == 0 {
            return c;
        }
    }
    panic!("every round still GETs after {SETTLE_ROUNDS} rounds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_rounds_cost_list_pages_and_a_rotation_one_get() {
    let h = Harness::new().await;
    let config = config(&h, 100);
    let mut agent = h.spawn_agent(&config, &[]);
    agent.round().await;
    assert_eq!(read(&h.path("out/s99.txt")), "value-99");

    let c = settle(&h, &mut agent).await;
    assert_eq!((c.kv_lists, c.kv_gets, c.kv_requests), (4, 0, 4), "{c:?}");
    let (_, c) = next_round(&h, &mut agent).await;
    assert_eq!((c.kv_lists, c.kv_gets, c.tokens_issued), (4, 0, 0), "{c:?}");

    h.emu.set_secret("sec-42", "value-42-v2");
    let (line, c) = next_round(&h, &mut agent).await;
    assert!(line.contains("files_written=1"), "{line}");
    assert_eq!((c.kv_lists, c.kv_gets), (4, 1), "{c:?}");
    assert_eq!(read(&h.path("out/s42.txt")), "value-42-v2");
    agent.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_secret_fails_its_alias_from_the_list_alone() {
    let h = Harness::new().await;
    let config = config(&h, 3);
    let mut agent = h.spawn_agent(&config, &[]);
    agent.round().await;
    settle(&h, &mut agent).await;

    h.emu.delete_secret("sec-1");
    h.emu.set_secret("sec-2", "value-2-v2");
    let (line, c) = next_round(&h, &mut agent).await;
    assert!(line.contains("ok=false"), "{line}");
    agent
        .wait_for("not found", std::time::Duration::from_secs(10))
        .await;
    assert_eq!(
        (c.kv_lists, c.kv_gets),
        (1, 1),
        "only the rotated one: {c:?}"
    );
    assert_eq!(read(&h.path("out/s1.txt")), "value-1", "last good kept");
    assert_eq!(read(&h.path("out/s2.txt")), "value-2-v2");

    // It comes back: fetched again.
    h.emu.set_secret("sec-1", "value-1-v2");
    let (line, _) = next_round(&h, &mut agent).await;
    assert!(line.contains("ok=true"), "{line}");
    assert_eq!(read(&h.path("out/s1.txt")), "value-1-v2");
    agent.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forbidden_list_falls_back_to_gets_and_is_remembered() {
    let h = Harness::new().await;
    let config = config(&h, 3);
    let mut agent = h.spawn_agent(&config, &[]);
    agent.round().await;
    // The next Key Vault request of the agent is round 2's list.
    h.emu.push_fault(Fault {
        service: Service::KeyVault,
        status: 403,
        code: Some("ForbiddenByRbac".into()),
        times: 1,
        ..Fault::default()
    });
    let (line, c) = next_round(&h, &mut agent).await;
    assert!(line.contains("ok=true"), "{line}");
    // A faulted request is not counted as a list page: count by path.
    assert_eq!((lists(&c), c.kv_gets), (1, 3), "{c:?}");

    h.emu.set_secret("sec-0", "value-0-v2");
    for _ in 0..2 {
        let (line, c) = next_round(&h, &mut agent).await;
        assert!(line.contains("ok=true"), "{line}");
        assert_eq!((lists(&c), c.kv_gets), (0, 3), "no list retried: {c:?}");
    }
    assert_eq!(read(&h.path("out/s0.txt")), "value-0-v2");
    let (_, log) = agent.terminate().await;
    let notes = log.iter().filter(|l| l.contains("may not list")).count();
    assert_eq!(notes, 1, "logged once:\n{}", log.join("\n"));
    assert!(
        !log.iter()
            .any(|l| l.contains("ERROR") || l.contains("WARN")),
        "no noise:\n{}",
        log.join("\n")
    );
}
