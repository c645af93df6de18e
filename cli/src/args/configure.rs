//! `barge configure`: where the barge API is.

use std::path::PathBuf;

use clap::Args;

pub(super) const CONFIGURE_HELP: &str = "Profiles live in $XDG_CONFIG_HOME/barge/config.json (~/.config/barge/config.json). Without flags, prints the profile.\n\nExamples:\n  barge configure --stack barge-prod          # the stack's ApiEndpoint output\n  barge configure --endpoint https://abc123.execute-api.eu-west-1.amazonaws.com\n  barge configure --profile local --endpoint http://127.0.0.1:7447";

/// `barge configure`.
#[derive(Debug, Args)]
pub struct ConfigureArgs {
    /// Read the endpoint from this CloudFormation stack's `ApiEndpoint` output (AWS
    /// credentials and region from the standard chain, or --region).
    #[arg(long, value_name = "NAME", conflicts_with = "endpoint")]
    pub stack: Option<String>,
    /// The endpoint to store.
    #[arg(long = "endpoint", value_name = "URL")]
    pub endpoint: Option<String>,
    /// AWS region of the stack [default: AWS_REGION, the AWS profile's].
    #[arg(long, value_name = "REGION", requires = "stack")]
    pub region: Option<String>,
    /// The bearer token file for a `barge serve` endpoint [default: the one it wrote].
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
}
