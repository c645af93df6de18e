/**
 * `RustLambda`: one of barge's Rust binaries as an arm64 Lambda (cargo-lambda-cdk's
 * `RustFunction`, built from the workspace by `cargo lambda build`), with its own role and
 * a log group created before it (docs/design-notes.md 21: a function that logs before its group exists
 * gets a group with no retention, outside the stack).
 */
import * as path from 'node:path';
import { Duration, RemovalPolicy } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import { RustFunction } from 'cargo-lambda-cdk';
import { Construct } from 'constructs';
import { expectWildcards } from '../nag';

/** The workspace manifest the Lambdas are built from. */
export const WORKSPACE_MANIFEST = path.join(__dirname, '..', '..', '..', 'Cargo.toml');

export interface RustLambdaProps {
  /** The workspace binary (`functions/*`). */
  readonly binaryName: string;
  /** What the function is for (the Lambda and role descriptions). */
  readonly description: string;
  /** Environment variables. */
  readonly environment: Record<string, string>;
  /** @default 30 seconds */
  readonly timeout?: Duration;
  /** @default 256 */
  readonly memorySize?: number;
  /** At most this many invocations at once. @default no limit */
  readonly reservedConcurrentExecutions?: number;
  /** Retention of the function's logs. */
  readonly logRetention: logs.RetentionDays;
  /** What happens to the logs when the stack is deleted. */
  readonly removalPolicy: RemovalPolicy;
}

/** A Rust Lambda with its role and log group. */
export class RustLambda extends Construct {
  /** The function. */
  public readonly function: lambda.Function;
  /** Its execution role: log writes to its own group, and what the owner grants. */
  public readonly role: iam.Role;
  /** Its log group. */
  public readonly logGroup: logs.LogGroup;

  constructor(scope: Construct, id: string, props: RustLambdaProps) {
    super(scope, id);
    if (!/^[a-z][a-z0-9-]*$/.test(props.binaryName)) {
      throw new Error(`RustLambda: ${JSON.stringify(props.binaryName)} is not a binary name of the workspace`);
    }
    this.logGroup = new logs.LogGroup(this, 'Logs', { retention: props.logRetention, removalPolicy: props.removalPolicy });
    this.role = new iam.Role(this, 'Role', {
      assumedBy: new iam.ServicePrincipal('lambda.amazonaws.com'),
      description: `barge ${props.binaryName}: ${props.description}`,
    });
    this.role.addToPolicy(
      new iam.PolicyStatement({
        actions: ['logs:CreateLogStream', 'logs:PutLogEvents'],
        resources: [`${this.logGroup.logGroupArn}:log-stream:*`],
      }),
    );
    expectWildcards(this.role, [
      { finding: /^Resource::<[A-Za-z0-9]+\.Arn>:log-stream:\*$/, reason: 'Log streams of a log group of this stack: Lambda names a stream per execution environment' },
    ]);
    this.function = new RustFunction(this, 'Function', {
      manifestPath: WORKSPACE_MANIFEST,
      binaryName: props.binaryName,
      architecture: lambda.Architecture.ARM_64,
      description: props.description,
      environment: { RUST_LOG: 'info', ...props.environment },
      timeout: props.timeout ?? Duration.seconds(30),
      memorySize: props.memorySize ?? 256,
      reservedConcurrentExecutions: props.reservedConcurrentExecutions,
      role: this.role,
      logGroup: this.logGroup,
      loggingFormat: lambda.LoggingFormat.JSON,
    });
    this.function.node.addDependency(this.logGroup);
  }
}
