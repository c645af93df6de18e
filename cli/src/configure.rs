//! `barge configure`: stores a profile's API endpoint, given or read from a deployed stack's
//! `ApiEndpoint` output (CloudFormation `DescribeStacks`, with the standard AWS credential
//! chain).

#![allow(clippy::print_stdout)]

use crate::{
    args::ConfigureArgs,
    config::{ConfigFile, Profile},
    exit as code,
};

/// The stack output that holds the API endpoint (the CDK app exports it).
pub const ENDPOINT_OUTPUT: &str = "ApiEndpoint";

/// Checks that `url` is an endpoint barge can call: https, or http on loopback.
fn check_endpoint(url: &str) -> Result<String, String> {
    let parsed = url::Url::parse(url.trim()).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    let loopback = matches!(parsed.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
    match parsed.scheme() {
        "https" => {}
        "http" if loopback => {}
        "http" => return Err(format!("{url} must use https (plain http is only for barge serve on loopback)")),
        other => return Err(format!("{url} is a {other}: URL, not an http(s) endpoint")),
    }
    Ok(parsed.as_str().trim_end_matches('/').to_string())
}

/// `ApiEndpoint` of `stack`.
async fn stack_endpoint(stack: &str, region: Option<&str>) -> Result<String, String> {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(region) = region {
        loader = loader.region(aws_config::Region::new(region.to_string()));
    }
    let sdk = loader.load().await;
    if sdk.region().is_none() {
        return Err("no AWS region: pass --region or set AWS_REGION".into());
    }
    let client = aws_sdk_cloudformation::Client::new(&sdk);
    let answer = client.describe_stacks().stack_name(stack).send().await.map_err(|e| {
        let detail = aws_sdk_cloudformation::error::DisplayErrorContext(&e).to_string();
        if detail.contains("does not exist") {
            format!(
                "there is no stack {stack:?} in {}: check the name and --region",
                sdk.region().map(|r| r.to_string()).unwrap_or_default()
            )
        } else {
            format!("cannot describe stack {stack:?}: {detail}\n  the caller needs cloudformation:DescribeStacks on it")
        }
    })?;
    let found = answer.stacks().first().ok_or_else(|| format!("there is no stack {stack:?}"))?;
    found
        .outputs()
        .iter()
        .find(|o| o.output_key() == Some(ENDPOINT_OUTPUT))
        .and_then(|o| o.output_value())
        .map(str::to_string)
        .ok_or_else(|| format!("stack {stack:?} has no {ENDPOINT_OUTPUT} output: is it barge's API stack?"))
}

/// Runs `barge configure` for `profile`.
pub async fn configure(args: &ConfigureArgs, profile: &str) -> u8 {
    let mut file = match ConfigFile::load() {
        Ok(file) => file,
        Err(e) => {
            errln!("error: {e}");
            return code::FAILED;
        }
    };
    if args.stack.is_none() && args.endpoint.is_none() && args.token_file.is_none() {
        match file.profiles.get(profile) {
            Some(p) => {
                outln!("profile   {profile}");
                outln!("endpoint  {}", p.endpoint.as_deref().unwrap_or("-"));
                if let Some(stack) = &p.stack {
                    outln!("stack     {stack}");
                }
                if let Some(token) = &p.token_file {
                    outln!("token     {}", token.display());
                }
            }
            None => outln!(
                "profile {profile} is not configured: barge configure --stack NAME (or --endpoint URL){}",
                if profile == "default" { "" } else { " --profile NAME" }
            ),
        }
        return code::OK;
    }
    let endpoint = match (&args.stack, &args.endpoint) {
        (Some(stack), _) => match stack_endpoint(stack, args.region.as_deref()).await {
            Ok(url) => Some(url),
            Err(e) => {
                errln!("error: {e}");
                return code::FAILED;
            }
        },
        (None, Some(url)) => Some(url.clone()),
        (None, None) => None,
    };
    let entry = file.profiles.entry(profile.to_string()).or_insert_with(Profile::default);
    if let Some(url) = endpoint {
        match check_endpoint(&url) {
            Ok(url) => entry.endpoint = Some(url),
            Err(e) => {
                errln!("error: {e}");
                return code::USAGE;
            }
        }
        entry.stack = args.stack.clone();
    }
    if let Some(token) = &args.token_file {
        entry.token_file = Some(token.clone());
    }
    let shown = entry.endpoint.clone().unwrap_or_default();
    match file.save() {
        Ok(path) => {
            outln!("profile {profile}: endpoint {shown} (saved in {})", path.display());
            outln!("remote is now the default for init, validate and verify; --local runs them here");
            code::OK
        }
        Err(e) => {
            errln!("error: {e}");
            code::FAILED
        }
    }
}
