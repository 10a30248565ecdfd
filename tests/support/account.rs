//! Accounts, pods and DPoP-bound tokens from xpod's own identity provider,
//! through the CSS-compatible `/.account/` API and client credentials: what
//! a test needs to act as a WebID.

use reqwest::{Client, RequestBuilder};
use serde_json::{Value, json};

use super::dpop::DpopKey;

/// Sends a request and reads its JSON body (`Null` when there is none).
pub async fn send(req: RequestBuilder) -> (u16, Value) {
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// What a CSS client gets from the account sequence.
#[derive(Clone)]
pub struct Account {
    pub token: String,
    pub controls: Value,
    pub webid: String,
    pub pod: String,
    pub client_id: String,
    pub secret: String,
}

/// The sequence CSS's own clients use, following only the controls:
/// an account, a password login, a pod `pod` (and its WebID), client
/// credentials for that WebID.
pub async fn account_sequence(http: &Client, base: &str, pod: &str, email: &str) -> Account {
    let (status, index) = send(http.get(format!("{base}.account/"))).await;
    assert_eq!(status, 200, "{index}");
    assert_eq!(index["version"], "0.5");
    let create = index["controls"]["account"]["create"].as_str().unwrap();
    let (status, created) = send(http.post(create).json(&json!({}))).await;
    assert_eq!(status, 200, "{created}");
    let token = created["authorization"].as_str().unwrap().to_string();
    let auth = format!("CSS-Account-Token {token}");
    let (status, index) = send(
        http.get(format!("{base}.account/"))
            .header("authorization", &auth),
    )
    .await;
    assert_eq!(status, 200);
    let controls = index["controls"].clone();
    let (status, login) = send(
        http.post(controls["password"]["create"].as_str().unwrap())
            .header("authorization", &auth)
            .json(&json!({"email": email, "password": "correct horse battery"})),
    )
    .await;
    assert_eq!(status, 200, "{login}");
    let (status, made) = send(
        http.post(controls["account"]["pod"].as_str().unwrap())
            .header("authorization", &auth)
            .json(&json!({"name": pod})),
    )
    .await;
    assert_eq!(status, 200, "{made}");
    assert_eq!(made["pod"], format!("{base}{pod}/"));
    let webid = made["webId"].as_str().unwrap().to_string();
    assert_eq!(webid, format!("{base}{pod}/profile/card#me"));
    let (status, cc) = send(
        http.post(controls["account"]["clientCredentials"].as_str().unwrap())
            .header("authorization", &auth)
            .json(&json!({"name": "script", "webId": webid})),
    )
    .await;
    assert_eq!(status, 200, "{cc}");
    Account {
        token,
        controls,
        webid,
        pod: made["pod"].as_str().unwrap().to_string(),
        client_id: cc["id"].as_str().unwrap().to_string(),
        secret: cc["secret"].as_str().unwrap().to_string(),
    }
}

/// Client credentials for another of the account's WebIDs.
pub async fn more_credentials(
    http: &Client,
    acct: &Account,
    name: &str,
    webid: &str,
) -> (Account, Value) {
    let (status, cc) = send(
        http.post(
            acct.controls["account"]["clientCredentials"]
                .as_str()
                .unwrap(),
        )
        .header("authorization", format!("CSS-Account-Token {}", acct.token))
        .json(&json!({"name": name, "webId": webid})),
    )
    .await;
    assert_eq!(status, 200, "{cc}");
    let account = Account {
        client_id: cc["id"].as_str().unwrap().to_string(),
        secret: cc["secret"].as_str().unwrap().to_string(),
        webid: webid.to_string(),
        ..acct.clone()
    };
    (account, cc)
}

/// A token from `base`'s token endpoint (found through discovery).
pub async fn access_token(
    http: &Client,
    base: &str,
    acct: &Account,
    key: &DpopKey,
) -> reqwest::Response {
    let (_, config) = send(http.get(format!("{base}.well-known/openid-configuration"))).await;
    let endpoint = config["token_endpoint"].as_str().unwrap();
    http.post(endpoint)
        .basic_auth(&acct.client_id, Some(&acct.secret))
        .header("dpop", key.proof("POST", endpoint, None))
        .form(&[("grant_type", "client_credentials"), ("scope", "webid")])
        .send()
        .await
        .unwrap()
}

/// The access token of a successful token response.
pub async fn token_of(resp: reqwest::Response) -> String {
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["token_type"], "DPoP", "{body}");
    body["access_token"].as_str().unwrap().to_string()
}

/// `GET /.auth/whoami` with a token: who the server takes the caller for.
pub async fn whoami(http: &Client, base: &str, token: &str, key: &DpopKey) -> (u16, Value) {
    let url = format!("{base}.auth/whoami");
    send(
        http.get(&url)
            .header("authorization", format!("DPoP {token}"))
            .header("dpop", key.proof("GET", &url, Some(token))),
    )
    .await
}

/// A logged-in WebID: a DPoP-bound access token and its key.
pub struct Agent {
    pub webid: String,
    pub token: String,
    pub key: DpopKey,
}

impl Agent {
    /// Logs `acct`'s WebID in with its client credentials at `base`.
    pub async fn log_in(http: &Client, base: &str, acct: &Account) -> Agent {
        let key = DpopKey::new();
        let token = token_of(access_token(http, base, acct, &key).await).await;
        Agent {
            webid: acct.webid.clone(),
            token,
            key,
        }
    }

    /// Adds this agent's credentials (the token and a fresh proof for
    /// `method url`) to a request.
    pub fn sign(&self, req: RequestBuilder, method: &str, url: &str) -> RequestBuilder {
        req.header("authorization", format!("DPoP {}", self.token))
            .header("dpop", self.key.proof(method, url, Some(&self.token)))
    }
}

/// Adds `agent`'s credentials to a request, or nothing for an anonymous
/// caller.
pub fn signed(
    agent: Option<&Agent>,
    req: RequestBuilder,
    method: &str,
    url: &str,
) -> RequestBuilder {
    match agent {
        Some(a) => a.sign(req, method, url),
        None => req,
    }
}
