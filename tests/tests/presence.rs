//! Presence: `GET /v1/presence/{user}` on the edge lists the sessions a user has open,
//! per device, read from the JetStream KV bucket the edges write.

use std::time::Duration;

use paytrack_tests::Mesh;
use paytrack_tests::ws::WsClient;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);

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
    let mesh = Mesh::start().await?;
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
