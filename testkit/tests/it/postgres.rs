//! The PostgreSQL helper starts a real server that checks passwords.

use sitrep_testkit::postgres::{self, Postgres};

async fn connect(conninfo: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(conninfo, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

#[tokio::test]
async fn server_accepts_the_password_and_refuses_another() {
    let server = Postgres::start().expect("PostgreSQL starts");
    server.create_database("shop").expect("database created");

    let client = connect(&server.conninfo("shop"))
        .await
        .expect("password accepted");
    let row = client
        .query_one(
            "SELECT current_database(), current_setting('server_version_num')::int",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "shop");
    assert!(row.get::<_, i32>(1) >= 150_000, "PostgreSQL 15 or newer");

    let by_url = connect(&server.url("shop"))
        .await
        .expect("URL form works too");
    let listen: String = by_url
        .query_one("SHOW listen_addresses", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(listen, "127.0.0.1");

    let wrong = server
        .conninfo("shop")
        .replace(postgres::PASSWORD, "not-the-password");
    let error = connect(&wrong).await.expect_err("wrong password refused");
    let code = error.as_db_error().map(|db| db.code().code().to_owned());
    // 28P01 is invalid_password.
    assert_eq!(code.as_deref(), Some("28P01"), "{error}");
}
