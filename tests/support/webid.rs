//! A WebID document served by the test itself.

use std::sync::{Arc, Mutex};

/// A WebID document served by the test itself, on 127.0.0.1.
pub struct WebIdServer {
    pub webid: String,
    body: Arc<Mutex<String>>,
    task: tokio::task::JoinHandle<()>,
}

impl WebIdServer {
    pub async fn start() -> WebIdServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let body = Arc::new(Mutex::new(String::new()));
        let served = body.clone();
        let app = axum::Router::new().route(
            "/card",
            axum::routing::get(move || {
                let text = served.lock().unwrap().clone();
                async move { ([("content-type", "text/turtle")], text) }
            }),
        );
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        WebIdServer {
            webid: format!("http://127.0.0.1:{port}/card#me"),
            body,
            task,
        }
    }

    pub fn add(&self, line: &str) {
        let mut body = self.body.lock().unwrap();
        body.push_str(line);
        body.push('\n');
    }

    /// Stops answering: the port refuses connections from now on.
    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}
