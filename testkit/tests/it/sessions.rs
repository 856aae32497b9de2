//! The scenario's sessions really wait on each other in a real PostgreSQL.

use sitrep_testkit::postgres::Postgres;
use sitrep_testkit::scenario::Scenario;
use sitrep_testkit::sessions::Sessions;

#[tokio::test]
async fn sessions_block_on_a_and_d_idles() {
    let scenario = Scenario::incident();
    let server = Postgres::start().unwrap();
    server.create_database(&scenario.postgres.database).unwrap();
    let conninfo = server.conninfo(&scenario.postgres.database);
    let sessions = Sessions::open(&conninfo, &scenario.postgres).expect("sessions settle");
    let a = sessions.pid("A").unwrap();
    let (sessions_b, sessions_c, sessions_d) = (
        sessions.pid("B").unwrap(),
        sessions.pid("C").unwrap(),
        sessions.pid("D").unwrap(),
    );

    let (client, connection) = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let rows = client
        .query(
            "SELECT pid, application_name, state, coalesce(wait_event_type, ''), pg_blocking_pids(pid), query \
             FROM pg_stat_activity WHERE pid = ANY($1) ORDER BY pid",
            &[&sessions.pids().values().copied().collect::<Vec<i32>>()],
        )
        .await
        .unwrap();
    let by_pid = |pid: i32| rows.iter().find(|row| row.get::<_, i32>(0) == pid).unwrap();

    let row_a = by_pid(a);
    assert_eq!(row_a.get::<_, String>(1), "orders-worker");
    assert_eq!(row_a.get::<_, String>(2), "active");
    assert_eq!(row_a.get::<_, String>(5), "SELECT pg_sleep(600)");
    for name in ["B", "C"] {
        let row = by_pid(sessions.pid(name).unwrap());
        assert_eq!(row.get::<_, String>(1), "orders-api");
        assert_eq!(row.get::<_, String>(3), "Lock");
        assert_eq!(
            row.get::<_, Vec<i32>>(4),
            vec![a],
            "session {name} waits on A"
        );
    }
    let row_d = by_pid(sessions.pid("D").unwrap());
    assert_eq!(row_d.get::<_, String>(1), "reporting");
    assert_eq!(row_d.get::<_, String>(2), "idle in transaction");

    drop(sessions);
    // Closing the sessions ends their backends; the server notices within moments.
    let pids: Vec<i32> = [a, sessions_b, sessions_c, sessions_d].to_vec();
    let mut left = i64::MAX;
    for _ in 0..200 {
        left = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1)",
                &[&pids],
            )
            .await
            .unwrap()
            .get(0);
        if left == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(left, 0, "backends of closed sessions still listed");
}
