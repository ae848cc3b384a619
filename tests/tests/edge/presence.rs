//! Presence: `GET /v1/presence/{user}` on the edge lists the sessions a user has open,
//! per device, from the edge's view (a watch) of the JetStream KV bucket the edges write.

use std::time::Duration;

use paytrack_tests::Mesh;
use paytrack_tests::mesh::MeshOptions;
use paytrack_tests::ws::WsClient;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

/// The edge's answer to `GET /v1/presence/{user}` with `token`: status and body.
async fn presence(mesh: &Mesh, user: &str, token: Option<&str>) -> anyhow::Result<(u16, Value)> {
    let mut request = reqwest::Client::new().get(format!("http://{}/v1/presence/{user}", mesh.edge_addr));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await.unwrap_or(Value::Null)))
}

/// Devices of the user's open sessions, sorted.
fn devices(body: &Value) -> Vec<String> {
    let mut devices: Vec<String> = body["sessions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["device"].as_str().map(str::to_owned))
        .collect();
    devices.sort();
    devices
}

/// A user's two devices appear while their sessions are open and disappear when they
/// close; an operator may ask for any user, a user only for itself, nobody without a
/// token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_lists_a_users_open_devices_and_forgets_closed_ones() -> anyhow::Result<()> {
    // Rare heartbeats: the clients here read nothing, and a client silent for three
    // heartbeats is closed, which a loaded machine can reach mid-test.
    let mesh = Mesh::start_with(MeshOptions::quiet()).await?;
    let channels = Some(vec!["user:u_here".to_owned()]);
    let phone = mesh
        .jwt
        .mint("u_here", &mesh.tenant, 600, channels.clone(), Some("phone".into()));
    let laptop = mesh
        .jwt
        .mint("u_here", &mesh.tenant, 600, channels, Some("laptop".into()));
    let mut on_phone = WsClient::connect(&mesh.ws_url(), &phone).await?;
    on_phone.next_of("welcome", WAIT).await?;
    let mut on_laptop = WsClient::connect(&mesh.ws_url(), &laptop).await?;
    on_laptop.next_of("welcome", WAIT).await?;

    let operator = mesh.operator_token();
    let both = mesh
        .eventually(WAIT, "both devices present", || async {
            let (status, body) = presence(&mesh, "u_here", Some(&operator)).await.ok()?;
            (status == 200 && devices(&body) == ["laptop", "phone"]).then_some(body)
        })
        .await?;
    assert!(both["sessions"].as_array().is_some_and(|s| {
        s.iter()
            .all(|s| s["edge_id"] == mesh.edge_id.as_str() && s["transport"] == "websocket")
    }));

    // The user may ask for itself; another user may not; nobody without a token.
    assert_eq!(presence(&mesh, "u_here", Some(&phone)).await?.0, 200);
    let stranger = mesh.scoped_token("u_other", &["user:u_other"]);
    assert_eq!(presence(&mesh, "u_here", Some(&stranger)).await?.0, 403);
    assert_eq!(presence(&mesh, "u_here", None).await?.0, 401);
    assert_eq!(presence(&mesh, "u.here", Some(&operator)).await?.0, 400);
    // Another tenant's operator sees nothing of this tenant's users.
    let (status, body) = presence(&mesh, "u_here", Some(&mesh.other_operator_token())).await?;
    assert_eq!((status, devices(&body).len()), (200, 0));

    drop(on_phone);
    mesh.eventually(WAIT, "the phone gone once its session closed", || async {
        let (_, body) = presence(&mesh, "u_here", Some(&operator)).await.ok()?;
        (devices(&body) == ["laptop"]).then_some(())
    })
    .await?;
    drop(on_laptop);
    Ok(())
}

/// A session key as an edge writes it (`presence.rs`'s `Here`).
fn session_entry(device: &str, session_id: &str, edge_id: &str) -> Vec<u8> {
    let now = chrono::Utc::now();
    serde_json::to_vec(&serde_json::json!({
        "device": device, "session_id": session_id, "edge_id": edge_id,
        "transport": "websocket", "since": now, "seen_at": now,
    }))
    .unwrap_or_default()
}

/// An edge's own key as it writes it: alive at `seen_at`.
fn alive_entry(edge_id: &str, seen_at: chrono::DateTime<chrono::Utc>) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({"edge_id": edge_id, "seen_at": seen_at})).unwrap_or_default()
}

/// A session is listed only while the edge holding it says it is alive: the key of a
/// session on an edge that never said so, or stopped saying so longer than the TTL
/// ago (an edge killed without closing its sessions), is not listed, while the
/// user's session on a live edge is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_on_an_edge_that_stopped_saying_it_is_alive_is_not_listed() -> anyhow::Result<()> {
    // Rare heartbeats: the clients here read nothing, and a client silent for three
    // heartbeats is closed, which a loaded machine can reach mid-test.
    let mesh = Mesh::start_with(MeshOptions::quiet()).await?;
    let operator = mesh.operator_token();
    let phone = mesh.jwt.mint(
        "u_ghost",
        &mesh.tenant,
        600,
        Some(vec!["user:u_ghost".to_owned()]),
        Some("phone".into()),
    );
    let mut on_phone = WsClient::connect(&mesh.ws_url(), &phone).await?;
    on_phone.next_of("welcome", WAIT).await?;
    mesh.eventually(WAIT, "the phone present", || async {
        let (_, body) = presence(&mesh, "u_ghost", Some(&operator)).await.ok()?;
        (devices(&body) == ["phone"]).then_some(())
    })
    .await?;

    // A tablet's session on an edge that has not said it is alive.
    let bucket = mesh.js.get_key_value("PAYTRACK_PRESENCE").await?;
    bucket
        .put(
            format!("{}.u_ghost.tablet.s-ghost", mesh.tenant),
            session_entry("tablet", "s-ghost", "ghost-edge").into(),
        )
        .await?;
    let (_, body) = presence(&mesh, "u_ghost", Some(&operator)).await?;
    assert_eq!(devices(&body), ["phone"], "{body}");

    // The ghost edge says it is alive: its session is listed, seen when it said so.
    let said = chrono::Utc::now();
    bucket
        .put("_edge.ghost-edge", alive_entry("ghost-edge", said).into())
        .await?;
    // A read finds the bucket's newest values.
    let body = mesh
        .eventually(WAIT, "the tablet listed", || async {
            let (_, body) = presence(&mesh, "u_ghost", Some(&operator)).await.ok()?;
            (devices(&body) == ["phone", "tablet"]).then_some(body)
        })
        .await?;
    let tablet = body["sessions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["device"] == "tablet")
        .cloned()
        .unwrap_or_default();
    assert_eq!(tablet["edge_id"], "ghost-edge", "{body}");
    let seen_at: chrono::DateTime<chrono::Utc> = serde_json::from_value(tablet["seen_at"].clone())?;
    assert_eq!(seen_at, said, "{body}");

    // It last said so longer than the TTL (60 s) ago: gone again.
    bucket
        .put(
            "_edge.ghost-edge",
            alive_entry("ghost-edge", said - chrono::Duration::seconds(61)).into(),
        )
        .await?;
    mesh.eventually(WAIT, "the tablet gone again", || async {
        let (_, body) = presence(&mesh, "u_ghost", Some(&operator)).await.ok()?;
        (devices(&body) == ["phone"]).then_some(())
    })
    .await?;
    drop(on_phone);
    Ok(())
}

/// Open sessions cost presence no writes while they live: with a 3 s TTL (the edge
/// says it is alive every second), 20 open sessions add only the edge's own writes
/// over 3.5 s (a key per session refreshed at a third of the TTL would be 60 and
/// more), and all 20 stay listed past the TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_sessions_cost_presence_no_writes_while_they_live() -> anyhow::Result<()> {
    let mesh = Mesh::start_with(MeshOptions {
        extra_settings: vec![("edge_presence_ttl_secs", "3".to_owned())],
        ..MeshOptions::quiet()
    })
    .await?;
    let operator = mesh.operator_token();
    let mut sessions = Vec::new();
    for i in 0..20 {
        let token = mesh.jwt.mint(
            "u_many",
            &mesh.tenant,
            600,
            Some(vec!["user:u_many".to_owned()]),
            Some(format!("d{i:02}")),
        );
        let mut ws = WsClient::connect(&mesh.ws_url(), &token).await?;
        ws.next_of("welcome", WAIT).await?;
        sessions.push(ws);
    }
    mesh.eventually(WAIT, "20 devices present", || async {
        let (_, body) = presence(&mesh, "u_many", Some(&operator)).await.ok()?;
        (devices(&body).len() == 20).then_some(())
    })
    .await?;
    let mut stream = mesh.js.get_stream("KV_PAYTRACK_PRESENCE").await?;
    let before = stream.info().await?.state.last_sequence;
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    let after = stream.info().await?.state.last_sequence;
    assert!(
        after - before <= 8,
        "{} presence writes in 3.5 s with 20 sessions open",
        after - before
    );
    let (_, body) = presence(&mesh, "u_many", Some(&operator)).await?;
    assert_eq!(devices(&body).len(), 20, "all still listed past the TTL: {body}");
    drop(sessions);
    Ok(())
}

/// The consumers PAYTRACK_PRESENCE's stream has now.
async fn presence_consumers(mesh: &Mesh) -> anyhow::Result<usize> {
    let mut stream = mesh.js.get_stream("KV_PAYTRACK_PRESENCE").await?;
    Ok(stream.info().await?.state.consumer_count)
}

/// A burst of concurrent presence reads (48 tasks with one end user's token) is
/// answered by direct gets of the bucket: the bucket has no consumer before (an edge
/// keeps no watch, so no copy of other edges' sessions) and gains none while it runs,
/// the burst is limited per tenant (429 with a Retry-After, never 503), and the other
/// tenant's operator reads go through all along.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_presence_reads_opens_no_consumer_and_is_limited_per_tenant() -> anyhow::Result<()> {
    // Rare heartbeats: the clients here read nothing, and a client silent for three
    // heartbeats is closed, which a loaded machine can reach mid-test.
    let mesh = Mesh::start_with(MeshOptions::quiet()).await?;
    let operator = mesh.operator_token();
    let me = mesh.jwt.mint(
        "u_burst",
        &mesh.tenant,
        600,
        Some(vec!["user:u_burst".to_owned()]),
        Some("phone".into()),
    );
    let mut on_phone = WsClient::connect(&mesh.ws_url(), &me).await?;
    on_phone.next_of("welcome", WAIT).await?;
    mesh.eventually(WAIT, "the phone present", || async {
        let (_, body) = presence(&mesh, "u_burst", Some(&operator)).await.ok()?;
        (devices(&body) == ["phone"]).then_some(())
    })
    .await?;
    let before = presence_consumers(&mesh).await?;
    assert_eq!(before, 0, "an edge watches the presence bucket");

    let url = format!("http://{}/v1/presence/u_burst", mesh.edge_addr);
    let http = reqwest::Client::new();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let burst: Vec<_> = (0..48)
        .map(|_| {
            let (http, url, me) = (http.clone(), url.clone(), me.clone());
            tokio::spawn(async move {
                let mut answers = Vec::new();
                for _ in 0..25 {
                    let response = http.get(&url).bearer_auth(&me).send().await?;
                    let retry_after = response.headers().get("retry-after").is_some();
                    answers.push((response.status().as_u16(), retry_after));
                }
                anyhow::Ok(answers)
            })
        })
        .collect();
    // While it runs: the bucket's consumers, and the other tenant's operator.
    let watching = {
        let (done, js) = (done.clone(), mesh.js.clone());
        tokio::spawn(async move {
            let mut most = 0;
            while !done.load(std::sync::atomic::Ordering::Acquire) {
                let mut stream = js.get_stream("KV_PAYTRACK_PRESENCE").await?;
                most = most.max(stream.info().await?.state.consumer_count);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            anyhow::Ok(most)
        })
    };
    let other = mesh.other_operator_token();
    let mut other_answers = Vec::new();
    for _ in 0..20 {
        other_answers.push(presence(&mesh, "u_burst", Some(&other)).await?.0);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut answers = Vec::new();
    for task in burst {
        answers.extend(task.await??);
    }
    done.store(true, std::sync::atomic::Ordering::Release);
    let most = watching.await??;

    assert_eq!(
        most, before,
        "presence reads opened consumers ({before} before, {most} during the burst)"
    );
    assert_eq!(presence_consumers(&mesh).await?, before);
    assert!(
        other_answers.iter().all(|s| *s == 200),
        "the other tenant: {other_answers:?}"
    );
    let ok = answers.iter().filter(|(s, _)| *s == 200).count();
    let limited: Vec<_> = answers.iter().filter(|(s, _)| *s == 429).collect();
    assert_eq!(ok + limited.len(), answers.len(), "only 200 and 429: {answers:?}");
    assert!(
        ok > 0 && !limited.is_empty(),
        "{ok} answered, {} limited",
        limited.len()
    );
    assert!(
        limited.iter().all(|(_, retry_after)| *retry_after),
        "429 without Retry-After"
    );
    // Once the limit refills, the user is answered again.
    mesh.eventually(WAIT, "the user answered again", || async {
        let (status, body) = presence(&mesh, "u_burst", Some(&me)).await.ok()?;
        (status == 200 && devices(&body) == ["phone"]).then_some(())
    })
    .await?;
    drop(on_phone);
    Ok(())
}
