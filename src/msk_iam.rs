//! Amazon MSK IAM authentication. MSK accepts SASL/OAUTHBEARER where the bearer token is a
//! SigV4-presigned `GET https://kafka.<region>.amazonaws.com/?Action=kafka-cluster:Connect`,
//! base64url-encoded without padding, exactly as AWS's own signers build it (the tests compare
//! with vectors from `aws-msk-iam-sasl-signer-python`). Credentials come from the AWS SDK's
//! standard chain (environment, shared profile, web identity for EKS service accounts, ECS
//! container credentials, instance metadata), optionally through an assumed role.
//!
//! librdkafka asks for a token from its own thread through [`crate::kafka_client::KafkaContext`];
//! [`TokenSource::token`] waits for the SDK there (never on a tokio worker) with a timeout, and
//! records failures in [`AuthStatus`] for `/readyz`, `/v1/status` and the metrics.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long a presigned token is valid, as AWS's signers set it.
pub const TOKEN_VALIDITY: Duration = Duration::from_secs(900);
const SERVICE: &str = "kafka-cluster";
const ACTION: &str = "kafka-cluster:Connect";

/// AWS credentials; `Debug` never shows the secret parts.
#[derive(Clone)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
    /// When the credentials stop working, if they are temporary.
    pub expires: Option<SystemTime>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .field("expires", &self.expires)
            .finish()
    }
}

/// A signed token and when librdkafka must stop using it.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthToken {
    pub token: String,
    /// Milliseconds since the Unix epoch; never later than the credentials' expiry.
    pub expiry_ms: i64,
}

impl std::fmt::Debug for AuthToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthToken")
            .field("token", &"<redacted>")
            .field("expiry_ms", &self.expiry_ms)
            .finish()
    }
}

/// Percent-encoding as SigV4 wants it: everything but `A-Z a-z 0-9 - _ . ~`.
fn uri_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Builds the MSK IAM token for `region` with `credentials`, signed at `now`.
pub fn auth_token(
    region: &str,
    credentials: &Credentials,
    now: SystemTime,
    user_agent: &str,
) -> AuthToken {
    let at = chrono::DateTime::<chrono::Utc>::from(now);
    let amz_date = at.format("%Y%m%dT%H%M%SZ").to_string();
    let date = at.format("%Y%m%d").to_string();
    let host = format!("kafka.{region}.amazonaws.com");
    let scope = format!("{date}/{region}/{SERVICE}/aws4_request");
    // In the order AWS's signers put them into the URL.
    let mut params: Vec<(&str, String)> = vec![
        ("Action", ACTION.to_string()),
        ("X-Amz-Algorithm", "AWS4-HMAC-SHA256".to_string()),
        (
            "X-Amz-Credential",
            format!("{}/{scope}", credentials.access_key_id),
        ),
        ("X-Amz-Date", amz_date.clone()),
        ("X-Amz-Expires", TOKEN_VALIDITY.as_secs().to_string()),
        ("X-Amz-SignedHeaders", "host".to_string()),
    ];
    if let Some(token) = &credentials.session_token {
        params.push(("X-Amz-Security-Token", token.clone()));
    }
    let mut sorted: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (uri_encode(k), uri_encode(v)))
        .collect();
    sorted.sort();
    let canonical_query: Vec<String> = sorted.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let canonical_request = format!(
        "GET\n/\n{}\nhost:{host}\n\nhost\n{}",
        canonical_query.join("&"),
        hex(&Sha256::digest(b""))
    );
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex(&Sha256::digest(canonical_request.as_bytes()))
    );
    let key = [date.as_str(), region, SERVICE, "aws4_request"]
        .iter()
        .fold(
            format!("AWS4{}", credentials.secret_access_key).into_bytes(),
            |key, part| hmac(&key, part),
        );
    let signature = hex(&hmac(&key, &string_to_sign));
    params.push(("X-Amz-Signature", signature));
    params.push(("User-Agent", user_agent.to_string()));
    let query: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{}={}", uri_encode(k), uri_encode(v)))
        .collect();
    let url = format!("https://{host}/?{}", query.join("&"));
    use base64::Engine;
    AuthToken {
        token: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(url),
        expiry_ms: expiry_ms(now, credentials.expires),
    }
}

/// The token's expiry: its validity from signing, capped by the credentials' own expiry.
pub fn expiry_ms(signed_at: SystemTime, credentials_expire: Option<SystemTime>) -> i64 {
    let token_end = signed_at + TOKEN_VALIDITY;
    let end = credentials_expire.map_or(token_end, |c| c.min(token_end));
    end.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// How token generation has been going, shared with the API and metrics.
#[derive(Default)]
pub struct AuthStatus {
    pub refreshes: AtomicU64,
    pub failures: AtomicU64,
    /// The last failure, cleared by the next success.
    pub last_error: Mutex<Option<String>>,
    pub last_success_ms: AtomicU64,
}

impl AuthStatus {
    pub fn failing(&self) -> Option<String> {
        self.last_error.lock().expect("lock").clone()
    }

    fn success(&self) {
        self.refreshes.fetch_add(1, Ordering::Relaxed);
        self.last_success_ms
            .store(crate::clock::now_ms(), Ordering::Relaxed);
        *self.last_error.lock().expect("lock") = None;
    }

    fn failure(&self, error: &str) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().expect("lock") = Some(error.to_string());
    }
}

/// Where credentials come from: the SDK chain, or fixed ones (tests, `check-config`).
pub trait CredentialSource: Send + Sync {
    fn credentials(
        &self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Credentials, String>> + Send + '_>>;
}

/// The AWS SDK's credential chain (optionally assuming a role).
pub struct SdkCredentials(pub aws_credential_types::provider::SharedCredentialsProvider);

impl CredentialSource for SdkCredentials {
    fn credentials(
        &self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Credentials, String>> + Send + '_>>
    {
        use aws_credential_types::provider::ProvideCredentials;
        Box::pin(async move {
            let c = self
                .0
                .provide_credentials()
                .await
                .map_err(|e| format!("no AWS credentials: {}", error_chain(&e)))?;
            Ok(Credentials {
                access_key_id: c.access_key_id().to_string(),
                secret_access_key: c.secret_access_key().to_string(),
                session_token: c.session_token().map(str::to_string),
                expires: c.expiry(),
            })
        })
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

/// Builds the SDK's credential chain for `region`, assuming `role_arn` when given.
pub async fn sdk_credentials(
    region: &str,
    profile: Option<&str>,
    role_arn: Option<&str>,
    session_name: &str,
) -> SdkCredentials {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(region.to_string()));
    if let Some(profile) = profile {
        loader = loader.profile_name(profile);
    }
    let sdk = loader.load().await;
    let base = sdk
        .credentials_provider()
        .expect("the default chain always has a credentials provider");
    let provider = match role_arn {
        Some(role) => aws_credential_types::provider::SharedCredentialsProvider::new(
            aws_config::sts::AssumeRoleProvider::builder(role)
                .session_name(session_name)
                .region(aws_config::Region::new(region.to_string()))
                .configure(&sdk)
                .build_from_provider(base)
                .await,
        ),
        None => base,
    };
    SdkCredentials(provider)
}

/// Signs tokens for librdkafka.
pub struct TokenSource {
    pub region: String,
    pub credentials: Arc<dyn CredentialSource>,
    pub runtime: tokio::runtime::Handle,
    pub timeout: Duration,
    pub status: Arc<AuthStatus>,
    pub user_agent: String,
}

impl TokenSource {
    /// A fresh token. Blocks the calling thread (librdkafka's), up to the timeout, while the
    /// credentials are fetched on the runtime.
    pub fn token(&self) -> Result<AuthToken, String> {
        let (tx, rx) = std::sync::mpsc::channel();
        let credentials = self.credentials.clone();
        self.runtime.spawn(async move {
            let _ = tx.send(credentials.credentials().await);
        });
        let result = match rx.recv_timeout(self.timeout) {
            Ok(Ok(credentials)) => {
                let now = SystemTime::now();
                if credentials.expires.is_some_and(|e| e <= now) {
                    Err("the AWS credentials have expired".to_string())
                } else {
                    Ok(auth_token(
                        &self.region,
                        &credentials,
                        now,
                        &self.user_agent,
                    ))
                }
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(format!(
                "no AWS credentials within {}",
                humantime::format_duration(self.timeout)
            )),
        };
        match &result {
            Ok(token) => {
                self.status.success();
                tracing::info!(
                    expires_in_s = (token.expiry_ms - crate::clock::now_ms() as i64) / 1000,
                    "signed a new MSK IAM token"
                );
            }
            Err(e) => {
                self.status.failure(e);
                tracing::error!(error = %e, "MSK IAM token refresh failed; events keep being stored");
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    struct Vectors {
        vectors: Vec<Vector>,
    }

    #[derive(serde::Deserialize)]
    struct Vector {
        region: String,
        access_key_id: String,
        secret_access_key: String,
        session_token: Option<String>,
        signing_time: String,
        user_agent: String,
        token: String,
        expiry_ms: i64,
    }

    #[test]
    fn tokens_match_aws_reference_signer() {
        let vectors: Vectors =
            serde_json::from_str(include_str!("../tests/vectors/msk_iam.json")).unwrap();
        assert!(vectors.vectors.len() >= 3);
        for v in vectors.vectors {
            let at: SystemTime = chrono::DateTime::parse_from_rfc3339(&v.signing_time)
                .unwrap()
                .into();
            let credentials = Credentials {
                access_key_id: v.access_key_id,
                secret_access_key: v.secret_access_key,
                session_token: v.session_token,
                expires: None,
            };
            let token = auth_token(&v.region, &credentials, at, &v.user_agent);
            assert_eq!(token.token, v.token, "vector signed at {}", v.signing_time);
            assert_eq!(token.expiry_ms, v.expiry_ms);
            assert!(!token.token.contains('=') && !token.token.contains('+'));
        }
    }

    #[test]
    fn expiry_never_outlives_the_credentials() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(expiry_ms(now, None), 1_000_900_000);
        let soon = now + Duration::from_secs(60);
        assert_eq!(expiry_ms(now, Some(soon)), 1_000_060_000);
        let later = now + Duration::from_secs(3600);
        assert_eq!(expiry_ms(now, Some(later)), 1_000_900_000);
    }

    #[test]
    fn debug_output_hides_the_secrets() {
        let c = Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "very-secret".into(),
            session_token: Some("session-secret".into()),
            expires: None,
        };
        let shown = format!("{c:?}");
        assert!(shown.contains("AKIDEXAMPLE"));
        assert!(!shown.contains("very-secret") && !shown.contains("session-secret"));
        let token = auth_token("ap-south-1", &c, SystemTime::now(), "test");
        assert!(!format!("{token:?}").contains(&token.token));
    }

    struct Fixed(Result<Credentials, String>, Duration);
    impl CredentialSource for Fixed {
        fn credentials(
            &self,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<Credentials, String>> + Send + '_>,
        > {
            Box::pin(async move {
                tokio::time::sleep(self.1).await;
                self.0.clone()
            })
        }
    }

    fn source(runtime: &tokio::runtime::Runtime, fixed: Fixed) -> TokenSource {
        TokenSource {
            region: "ap-south-1".into(),
            credentials: Arc::new(fixed),
            runtime: runtime.handle().clone(),
            timeout: Duration::from_millis(300),
            status: Arc::default(),
            user_agent: "edge-outbox-test".into(),
        }
    }

    fn credentials(expires_in: Option<Duration>) -> Credentials {
        Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "secret".into(),
            session_token: None,
            expires: expires_in.map(|d| SystemTime::now() + d),
        }
    }

    #[test]
    fn refresh_success_failure_timeout_and_expired_credentials() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        // Success: the token lives as long as the credentials, at most.
        let ok = source(
            &runtime,
            Fixed(
                Ok(credentials(Some(Duration::from_secs(120)))),
                Duration::ZERO,
            ),
        );
        let token = ok.token().unwrap();
        let left = token.expiry_ms - crate::clock::now_ms() as i64;
        assert!((110_000..=120_000).contains(&left), "{left} ms left");
        assert_eq!(ok.status.refreshes.load(Ordering::Relaxed), 1);
        assert!(ok.status.failing().is_none());
        // A failing chain: an error, counted and kept for /readyz, no panic.
        let failing = source(
            &runtime,
            Fixed(
                Err("no AWS credentials: no providers in chain".into()),
                Duration::ZERO,
            ),
        );
        assert!(failing.token().unwrap_err().contains("no providers"));
        assert_eq!(failing.status.failures.load(Ordering::Relaxed), 1);
        assert!(failing.status.failing().unwrap().contains("no providers"));
        // A chain that hangs: the timeout answers.
        let slow = source(
            &runtime,
            Fixed(Ok(credentials(None)), Duration::from_secs(30)),
        );
        assert!(slow.token().unwrap_err().contains("within 300ms"));
        // Credentials already expired are refused rather than signed.
        let expired = Credentials {
            expires: Some(SystemTime::now() - Duration::from_secs(1)),
            ..credentials(None)
        };
        let stale = source(&runtime, Fixed(Ok(expired), Duration::ZERO));
        assert!(stale.token().unwrap_err().contains("expired"));
        // A later success clears the failure.
        failing.status.success();
        assert!(failing.status.failing().is_none());
    }
}
