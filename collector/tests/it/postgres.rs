//! PostgreSQL against a real server, with a real lock wait to sample.

use sitrep_schemas::exit;
use sitrep_schemas::manifest::SourceStatus;
use sitrep_schemas::records::{PgActivityRow, PgServer};
use sitrep_testkit::postgres::{self as testpg, Postgres};

use crate::common::{Started, collect, contains};

async fn connect(conninfo: &str, app: &str) -> tokio_postgres::Client {
    let conninfo = format!("{conninfo} application_name={app}");
    let (client, connection) = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls)
        .await
        .expect("connect to the test server");
    tokio::spawn(connection);
    client
}

#[tokio::test(flavor = "multi_thread")]
async fn activity_and_locks_are_sampled_from_a_real_server() {
    let server = Postgres::start().expect("PostgreSQL starts");
    server.create_database("shop").expect("database created");
    let conninfo = server.conninfo("shop");

    let setup = connect(&conninfo, "it-setup").await;
    setup
        .batch_execute("CREATE TABLE orders (id int PRIMARY KEY, status text); INSERT INTO orders VALUES (1, 'new')")
        .await
        .unwrap();

    // The holder keeps a row lock in an open transaction; the waiter queues behind it.
    let holder = connect(&conninfo, "it-holder").await;
    holder
        .batch_execute("BEGIN; UPDATE orders SET status = 'held' WHERE id = 1")
        .await
        .unwrap();
    let holder_pid: i32 = holder
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let waiter = connect(&conninfo, "it-waiter").await;
    let waiter_pid: i32 = waiter
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let blocked = tokio::spawn(async move {
        let _ = waiter
            .execute("UPDATE orders SET status = 'waited' WHERE id = 1", &[])
            .await;
        waiter
    });
    let mut waiting = false;
    for _ in 0..400 {
        let row = setup
            .query_one(
                "SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1",
                &[&waiter_pid],
            )
            .await
            .unwrap();
        if row.get::<_, Option<String>>(0).as_deref() == Some("Lock") {
            waiting = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(waiting, "the waiter never queued on the lock");

    let target = format!("orders={conninfo}");
    let run = tokio::task::spawn_blocking(move || {
        collect(
            &[
                "--postgres",
                &target,
                "--samples",
                "2",
                "--sample-interval",
                "50ms",
            ],
            &[],
        )
    })
    .await
    .unwrap();
    assert_eq!(run.code, exit::COLLECT_OK, "{}", run.stderr);

    let source = run.source("postgres/orders");
    assert_eq!(source.status, SourceStatus::Ok);
    let parts: Vec<&str> = source.parts.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(parts, ["server", "sample-1", "sample-2"]);

    let server_json: PgServer =
        serde_json::from_value(run.json("postgres/orders/server.json")).unwrap();
    assert!(
        server_json.version_num >= 150_000,
        "{}",
        server_json.version_num
    );
    assert!(server_json.version.starts_with("PostgreSQL "));
    assert_eq!(server_json.samples, 2);
    assert_eq!(server_json.interval_ms, 50);
    let keys: Vec<&str> = server_json.settings.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "deadlock_timeout",
            "idle_in_transaction_session_timeout",
            "lock_timeout",
            "max_connections",
            "statement_timeout",
            "track_activities",
            "track_activity_query_size"
        ]
    );
    // initdb's default.
    assert_eq!(server_json.settings["track_activities"], "on");
    assert_eq!(
        server_json.target,
        conninfo.replace(testpg::PASSWORD, "<redacted>")
    );

    let rows: Vec<PgActivityRow> = run
        .ndjson("postgres/orders/activity.ndjson")
        .into_iter()
        .map(|v| serde_json::from_value(v).expect("row matches the record shape"))
        .collect();
    for sample in [1, 2] {
        let round: Vec<&PgActivityRow> = rows.iter().filter(|r| r.sample == sample).collect();
        let holder_row = round
            .iter()
            .find(|r| r.pid == holder_pid)
            .expect("holder sampled");
        assert_eq!(holder_row.state.as_deref(), Some("idle in transaction"));
        assert_eq!(holder_row.application_name.as_deref(), Some("it-holder"));
        let waiter_row = round
            .iter()
            .find(|r| r.pid == waiter_pid)
            .expect("waiter sampled");
        assert_eq!(waiter_row.wait_event_type.as_deref(), Some("Lock"));
        assert_eq!(waiter_row.blocked_by, [holder_pid]);
        assert!(
            round.iter().all(|r| r.sample_ts == round[0].sample_ts),
            "one stamp per round"
        );
    }
    assert!(
        rows.iter()
            .all(|r| r.application_name.as_deref() != Some("sitrep-collect"))
    );

    let locks = run.ndjson("postgres/orders/locks.ndjson");
    let lock_pids: std::collections::BTreeSet<i64> =
        locks.iter().map(|l| l["pid"].as_i64().unwrap()).collect();
    assert_eq!(
        lock_pids,
        [holder_pid as i64, waiter_pid as i64].into_iter().collect()
    );
    assert!(
        locks
            .iter()
            .any(|l| l["pid"] == waiter_pid && l["granted"] == false)
    );
    assert!(locks.iter().any(|l| l["sample"] == 2));

    assert!(!contains(&run.all_bytes(), testpg::PASSWORD));
    assert_eq!(
        run.manifest().redactions.get("connection_password"),
        Some(&1)
    );

    holder.batch_execute("ROLLBACK").await.unwrap();
    let _ = blocked.await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_password_is_forbidden() {
    let server = Postgres::start().expect("PostgreSQL starts");
    let target = server
        .url("postgres")
        .replace(testpg::PASSWORD, "not-the-password");
    let run = tokio::task::spawn_blocking(move || collect(&["--postgres", &target], &[]))
        .await
        .unwrap();
    assert_eq!(run.code, exit::COLLECT_PARTIAL, "{}", run.stderr);
    let source = run
        .manifest()
        .sources
        .into_iter()
        .find(|s| s.name.starts_with("postgres/"))
        .unwrap();
    assert_eq!(
        source.name,
        format!("postgres/127.0.0.1-{}-postgres", server.port())
    );
    assert_eq!(source.status, SourceStatus::Forbidden, "{:?}", source.error);
    assert!(!contains(&run.all_bytes(), "not-the-password"));
}

#[tokio::test(flavor = "multi_thread")]
async fn pg_environment_variables_make_a_target() {
    let server = Postgres::start().expect("PostgreSQL starts");
    let port = server.port().to_string();
    let run = tokio::task::spawn_blocking(move || {
        collect(
            &["--samples", "1"],
            &[
                ("PGHOST", "127.0.0.1"),
                ("PGPORT", &port),
                ("PGUSER", testpg::USER),
                ("PGPASSWORD", testpg::PASSWORD),
                ("PGDATABASE", "postgres"),
            ],
        )
    })
    .await
    .unwrap();
    assert_eq!(run.code, exit::COLLECT_OK, "{}", run.stderr);
    let name = format!("postgres/127.0.0.1-{}-postgres", server.port());
    assert_eq!(run.source(&name).status, SourceStatus::Ok);
    assert!(!contains(&run.all_bytes(), testpg::PASSWORD));
}

#[tokio::test(flavor = "multi_thread")]
async fn rounds_left_after_a_lost_connection_are_recorded_as_not_taken() {
    let server = Postgres::start().expect("PostgreSQL starts");
    let conninfo = server.conninfo("postgres");
    let admin = connect(&conninfo, "it-admin").await;
    let target = format!("db={conninfo}");
    let started = Started::new(
        &[
            "--postgres",
            &target,
            "--samples",
            "6",
            "--sample-interval",
            "1s",
        ],
        &[],
    );

    // End the collector's backend between its second and third rounds (a second apart),
    // as a restart or a kill would.
    let mut connected = false;
    for _ in 0..400 {
        let row = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'sitrep-collect'",
                &[],
            )
            .await
            .unwrap();
        if row.get::<_, i64>(0) > 0 {
            connected = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(connected, "the collector never connected");
    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = 'sitrep-collect'",
            &[],
        )
        .await
        .unwrap();
    let run = tokio::task::spawn_blocking(move || started.wait())
        .await
        .unwrap();

    assert_eq!(run.code, exit::COLLECT_PARTIAL, "{}", run.stderr);
    let source = run.source("postgres/db");
    let names: Vec<&str> = source.parts.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "server", "sample-1", "sample-2", "sample-3", "sample-4", "sample-5", "sample-6"
        ],
        "every planned round is in the manifest"
    );
    let lost = source
        .parts
        .iter()
        .position(|p| p.status != SourceStatus::Ok)
        .expect("a round failed");
    for part in &source.parts[lost + 1..] {
        assert_eq!(part.status, SourceStatus::Unreachable, "{}", part.name);
        let error = part.error.as_deref().unwrap_or_default();
        assert!(
            error.starts_with(&format!(
                "not taken: the connection was lost in {}",
                source.parts[lost].name
            )),
            "{}: {error}",
            part.name
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn target_names_that_clean_to_the_same_folder_do_not_collide() {
    let server = Postgres::start().expect("PostgreSQL starts");
    let conninfo = server.conninfo("postgres");
    let (slashed, plain) = (format!("a/b={conninfo}"), format!("a_b={conninfo}"));
    let suffixed = format!("a_b-2={conninfo}");
    let run = tokio::task::spawn_blocking(move || {
        let targets = [
            "--postgres",
            &slashed,
            "--postgres",
            &plain,
            "--postgres",
            &suffixed,
        ];
        collect(&[&targets[..], &["--samples", "1"]].concat(), &[])
    })
    .await
    .unwrap();

    assert_eq!(run.code, exit::COLLECT_OK, "{}", run.stderr);
    let names: Vec<String> = run
        .manifest()
        .sources
        .into_iter()
        .filter(|s| s.name.starts_with("postgres/"))
        .map(|s| s.name)
        .collect();
    // The source name is the folder its files are in.
    assert_eq!(
        names,
        ["postgres/a_b", "postgres/a_b-2", "postgres/a_b-2-2"]
    );
    let paths: Vec<String> = run.entries().into_iter().map(|(p, _, _)| p).collect();
    let mut unique = paths.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), paths.len(), "duplicate entries: {paths:?}");
    assert!(paths.contains(&"postgres/a_b-2/server.json".to_owned()));
}
