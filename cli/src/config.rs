//! Where the barge API is and how to prove who we are: `--api`/`BARGE_API`, else the
//! profile `barge configure` wrote (`$XDG_CONFIG_HOME/barge/config.json`), else the `barge
//! serve` running on this machine (its `serve.json`). AWS endpoints are called with SigV4
//! from the standard credential chain; `barge serve` with the bearer token it wrote. Also
//! remembers the last job submitted from this machine (`$XDG_STATE_HOME/barge/last-job`).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use barge_client::{ApiClient, Auth, SigV4};
use serde::{Deserialize, Serialize};

/// One profile of `config.json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// The API endpoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The stack it was read from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stack: Option<String>,
    /// The bearer token file (barge serve endpoints).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
}

/// `config.json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Profiles by name.
    #[serde(default)]
    pub profiles: BTreeMap<String, Profile>,
}

fn xdg(var: &str, fallback: &str) -> Option<PathBuf> {
    let base = std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|home| Path::new(&home).join(fallback)))?;
    Some(base.join("barge"))
}

/// `$XDG_DATA_HOME/barge`, else `~/.local/share/barge` (barge serve's default data dir).
pub fn default_data_dir() -> Option<PathBuf> {
    xdg("XDG_DATA_HOME", ".local/share")
}

/// `$XDG_CONFIG_HOME/barge/config.json`, else `~/.config/barge/config.json`.
pub fn config_path() -> Option<PathBuf> {
    xdg("XDG_CONFIG_HOME", ".config").map(|dir| dir.join("config.json"))
}

fn last_job_path() -> Option<PathBuf> {
    xdg("XDG_STATE_HOME", ".local/state").map(|dir| dir.join("last-job"))
}

/// Writes `contents` to `path` (0600) through a temporary file, so a reader never sees half.
fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let temporary = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&temporary)?;
    file.write_all(contents)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)
}

impl ConfigFile {
    /// The file, or an empty configuration when there is none.
    pub fn load() -> Result<ConfigFile, String> {
        let Some(path) = config_path() else { return Ok(ConfigFile::default()) };
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| format!("{} is not a barge configuration: {e}; fix or remove it", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ConfigFile::default()),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    /// Writes the file (0600); returns where.
    pub fn save(&self) -> Result<PathBuf, String> {
        let path = config_path().ok_or("cannot find a configuration directory: set HOME or XDG_CONFIG_HOME")?;
        let body = serde_json::to_vec_pretty(self).map_err(|e| e.to_string())?;
        write_private(&path, &body).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok(path)
    }
}

/// What `barge serve` wrote for clients: `DATA_DIR/serve.json`.
#[derive(Debug, Deserialize)]
struct Discovery {
    endpoint: String,
    token_file: PathBuf,
}

fn serve_data_dir() -> Option<PathBuf> {
    std::env::var_os("BARGE_DATA_DIR").filter(|v| !v.is_empty()).map(PathBuf::from).or_else(default_data_dir)
}

fn discovery() -> Option<Discovery> {
    let path = serve_data_dir()?.join("serve.json");
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Where the endpoint came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// `--api` or `BARGE_API`.
    Flag,
    /// The profile.
    Profile,
    /// The `barge serve` running on this machine.
    Serve,
}

/// The endpoint to use, if any, and where it came from.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// The URL.
    pub url: String,
    /// Where it came from.
    pub origin: Origin,
    /// The profile's token file, if it names one.
    token_file: Option<PathBuf>,
}

/// The configured endpoint: `--api`/`BARGE_API`, else the profile's, else a `barge serve` on
/// this machine.
pub fn endpoint(api: Option<&str>, profile: &str) -> Result<Option<Endpoint>, String> {
    let file = ConfigFile::load()?;
    let chosen = file.profiles.get(profile);
    if let Some(url) = api.map(str::trim).filter(|u| !u.is_empty()) {
        let token_file = chosen.and_then(|p| p.token_file.clone());
        return Ok(Some(Endpoint { url: url.to_string(), origin: Origin::Flag, token_file }));
    }
    if let Some(p) = chosen
        && let Some(url) = &p.endpoint
    {
        return Ok(Some(Endpoint { url: url.clone(), origin: Origin::Profile, token_file: p.token_file.clone() }));
    }
    if profile != "default" {
        return Err(format!("there is no profile {profile:?}: create it with `barge configure --profile {profile}`"));
    }
    Ok(discovery().map(|d| Endpoint { url: d.endpoint, origin: Origin::Serve, token_file: Some(d.token_file) }))
}

/// The endpoint, or the error that says how to configure one.
pub fn require_endpoint(api: Option<&str>, profile: &str) -> Result<Endpoint, String> {
    endpoint(api, profile)?.ok_or_else(|| {
        "no barge API is configured: pass --api URL (or set BARGE_API), run `barge configure --stack NAME` for a deployed barge, or start `barge serve` on this machine".to_string()
    })
}

/// Loopback hosts, where `barge serve` listens.
fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(name)) => name == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

fn read_token(path: &Path) -> Result<String, String> {
    let token = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "cannot read the barge serve token {}: {e}; barge serve writes it in its data directory (set BARGE_DATA_DIR, or `barge configure --token-file`)",
            path.display()
        )
    })?;
    let token = token.trim().to_string();
    if token.is_empty() {
        return Err(format!("the token file {} is empty", path.display()));
    }
    Ok(token)
}

/// A client of `endpoint`: SigV4 with the standard AWS credential chain for https
/// endpoints, the bearer token of `barge serve` for loopback ones.
pub async fn client(endpoint: &Endpoint) -> Result<ApiClient, String> {
    let url = url::Url::parse(endpoint.url.trim())
        .map_err(|e| format!("the API endpoint {:?} is not a URL: {e}", endpoint.url))?;
    let auth = if is_loopback(&url) {
        let path = std::env::var_os("BARGE_TOKEN_FILE")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| endpoint.token_file.clone())
            .or_else(|| discovery().filter(|d| d.endpoint == endpoint.url).map(|d| d.token_file))
            .or_else(|| serve_data_dir().map(|dir| dir.join("token")))
            .ok_or("cannot find barge serve's token: set BARGE_TOKEN_FILE")?;
        Auth::Bearer(read_token(&path)?)
    } else {
        if url.scheme() != "https" {
            return Err(format!(
                "the API endpoint {} must use https (plain http is only for barge serve on loopback)",
                endpoint.url
            ));
        }
        let region = SigV4::region_of(&endpoint.url);
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(region) = &region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        let sdk = loader.load().await;
        let credentials = sdk.credentials_provider().ok_or(
            "no AWS credentials: configure them as for the AWS CLI (aws configure, aws sso login, AWS_PROFILE, or an instance role)",
        )?;
        let region = region
            .or_else(|| sdk.region().map(|r| r.to_string()))
            .ok_or_else(|| format!("cannot tell the AWS region of {}: set AWS_REGION", endpoint.url))?;
        Auth::SigV4(SigV4::new(credentials, region))
    };
    ApiClient::new(&endpoint.url, auth).map_err(|e| e.to_string())
}

/// The last job submitted from this machine (to `endpoint`).
#[derive(Debug, Serialize, Deserialize)]
struct LastJob {
    endpoint: String,
    job: String,
}

/// Remembers `job` as the last one submitted to `endpoint`; failing to is not an error.
pub fn remember(endpoint: &str, job: &str) {
    let Some(path) = last_job_path() else { return };
    let body = serde_json::to_vec(&LastJob { endpoint: endpoint.into(), job: job.into() }).unwrap_or_default();
    if let Err(e) = write_private(&path, &body) {
        tracing::warn!("cannot remember the last job in {}: {e}", path.display());
    }
}

/// The job id given, else the last one submitted to `endpoint`.
pub fn job_id(given: Option<&str>, endpoint: &str) -> Result<String, String> {
    if let Some(id) = given {
        return Ok(id.to_string());
    }
    let last = last_job_path()
        .and_then(|path| std::fs::read(path).ok())
        .and_then(|bytes| serde_json::from_slice::<LastJob>(&bytes).ok());
    match last {
        Some(last) if last.endpoint == endpoint => Ok(last.job),
        Some(_) => {
            Err(format!("no job was submitted to {endpoint} from this machine yet: give a job id (`barge jobs list`)"))
        }
        None => Err("no job was submitted from this machine yet: give a job id (`barge jobs list`)".into()),
    }
}
