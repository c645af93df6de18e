/**
 * `CoordinatorApi`: the job API. An API Gateway HTTP API whose every route requires IAM
 * (SigV4) authorization — the caller's ARN is the job's owner, a worker is recognised by
 * its role's assumed-role session (docs/design-notes.md 11) — in front of the coordinator Lambda
 * (`functions/coordinator`). Access logs and throttling on the `$default` stage.
 */
import { Duration, RemovalPolicy } from 'aws-cdk-lib';
import { AccessLogFormat } from 'aws-cdk-lib/aws-apigateway';
import * as apigw from 'aws-cdk-lib/aws-apigatewayv2';
import { HttpIamAuthorizer } from 'aws-cdk-lib/aws-apigatewayv2-authorizers';
import { HttpLambdaIntegration } from 'aws-cdk-lib/aws-apigatewayv2-integrations';
import * as iam from 'aws-cdk-lib/aws-iam';
import { IKey } from 'aws-cdk-lib/aws-kms';
import * as logs from 'aws-cdk-lib/aws-logs';
import { Construct } from 'constructs';
import { expectWildcards } from '../nag';
import { JobTable } from './job-table';
import { RustLambda } from './rust-lambda';
import { WORKER_ROUTES, WorkerFleet } from './worker-fleet';

/** The routes users call (`barge` CLI); see `functions/coordinator/src/routes.rs`. */
export const USER_ROUTES = [
  { method: 'POST', path: '/jobs' },
  { method: 'GET', path: '/jobs' },
  { method: 'GET', path: '/jobs/{id}' },
  { method: 'POST', path: '/jobs/{id}/cancel' },
  { method: 'POST', path: '/jobs/{id}/cutover' },
  { method: 'POST', path: '/jobs/{id}/changes' },
  { method: 'GET', path: '/jobs/{id}/logs' },
] as const;

/**
 * The IAM5 finding of a user route with a job id, as cdk-nag words it: derived from
 * `USER_ROUTES`, so a new route is covered by the acknowledgment without a second list.
 */
function userRouteWildcard(): RegExp {
  const escape = (text: string) => text.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
  const routes = USER_ROUTES.filter((route) => route.path.includes('{id}')).map(
    (route) => `${route.method}${escape(route.path.replace('{id}', '*'))}`,
  );
  return new RegExp(`^Resource::arn:.*:execute-api:.*:<[A-Za-z0-9]+>/\\$default/(${routes.join('|')})$`);
}

/** The deadlines the coordinator and the reaper share (`Policy::from_vars` in crates/jobs). */
export interface Deadlines {
  /** A launched worker must claim its job within this. */
  readonly launchTimeout: Duration;
  /** A running job must report within this. */
  readonly heartbeatTimeout: Duration;
}

/** The environment of the deadlines. */
export function deadlineEnvironment(deadlines: Deadlines): Record<string, string> {
  return {
    LAUNCH_TIMEOUT_SECONDS: String(deadlines.launchTimeout.toSeconds()),
    HEARTBEAT_TIMEOUT_SECONDS: String(deadlines.heartbeatTimeout.toSeconds()),
  };
}

export interface CoordinatorApiProps {
  /** The jobs. */
  readonly table: JobTable;
  /** Seals the jobs' connection URLs (KMS `Encrypt`/`Decrypt`, encryption context `{job_id}`). */
  readonly key: IKey;
  /** The workers it launches. */
  readonly fleet: WorkerFleet;
  /** Jobs active at once. */
  readonly maxActiveJobs: number;
  /** Deadlines of launching and running jobs. */
  readonly deadlines: Deadlines;
  /** Requests per second, steady. */
  readonly rateLimit: number;
  /** Requests at once. */
  readonly burstLimit: number;
  /** Retention of the function's and the access logs. */
  readonly logRetention: logs.RetentionDays;
  /** What happens to the logs when the stack is deleted. */
  readonly removalPolicy: RemovalPolicy;
}

/** The coordinator and its HTTP API. */
export class CoordinatorApi extends Construct {
  /** The HTTP API. */
  public readonly api: apigw.HttpApi;
  /** Its `$default` stage. */
  public readonly stage: apigw.HttpStage;
  /** The coordinator Lambda. */
  public readonly coordinator: RustLambda;
  /** The API's access logs. */
  public readonly accessLogs: logs.LogGroup;
  /** A managed policy to attach to barge's users: `execute-api:Invoke` on the user routes only. */
  public readonly userPolicy: iam.ManagedPolicy;

  constructor(scope: Construct, id: string, props: CoordinatorApiProps) {
    super(scope, id);
    if (!Number.isInteger(props.maxActiveJobs) || props.maxActiveJobs < 1) {
      throw new Error(`CoordinatorApi: maxActiveJobs must be a positive whole number, not ${props.maxActiveJobs}`);
    }
    if (!(props.rateLimit > 0) || !Number.isInteger(props.burstLimit) || props.burstLimit < 1) {
      throw new Error('CoordinatorApi: rateLimit must be > 0 and burstLimit a positive whole number');
    }
    this.coordinator = new RustLambda(this, 'Coordinator', {
      binaryName: 'coordinator',
      description: 'the job API: submit, watch, cancel; workers claim and report',
      environment: {
        JOB_TABLE: props.table.table.tableName,
        KMS_KEY_ID: props.key.keyArn,
        MAX_ACTIVE_JOBS: String(props.maxActiveJobs),
        ...deadlineEnvironment(props.deadlines),
        ...props.fleet.launcherEnvironment(),
      },
      timeout: Duration.seconds(29),
      logRetention: props.logRetention,
      removalPolicy: props.removalPolicy,
    });
    const fn = this.coordinator.function;

    this.accessLogs = new logs.LogGroup(this, 'AccessLogs', {
      retention: props.logRetention,
      removalPolicy: props.removalPolicy,
    });
    this.api = new apigw.HttpApi(this, 'Api', {
      description: 'barge job API (IAM authorization on every route)',
      createDefaultStage: false,
    });
    this.stage = new apigw.HttpStage(this, 'DefaultStage', {
      httpApi: this.api,
      stageName: '$default',
      autoDeploy: true,
      throttle: { rateLimit: props.rateLimit, burstLimit: props.burstLimit },
      accessLogSettings: {
        destination: new apigw.LogGroupLogDestination(this.accessLogs),
        format: AccessLogFormat.jsonWithStandardFields({
          caller: true,
          httpMethod: true,
          ip: true,
          protocol: true,
          requestTime: true,
          resourcePath: true,
          responseLength: true,
          status: true,
          user: true,
        }),
      },
    });
    const integration = new HttpLambdaIntegration('Coordinator', fn);
    const authorizer = new HttpIamAuthorizer();
    for (const route of [...USER_ROUTES, ...WORKER_ROUTES]) {
      this.api.addRoutes({
        path: route.path,
        methods: [route.method as apigw.HttpMethod],
        integration,
        authorizer,
      });
    }
    // The workers' user data names this endpoint.
    fn.addEnvironment('API_ENDPOINT', this.api.apiEndpoint);

    props.table.grantStore(fn);
    fn.addToRolePolicy(
      new iam.PolicyStatement({
        sid: 'SealJobCredentials',
        actions: ['kms:Encrypt', 'kms:Decrypt'],
        resources: [props.key.keyArn],
        conditions: {
          'ForAllValues:StringEquals': { 'kms:EncryptionContextKeys': ['job_id'] },
          Null: { 'kms:EncryptionContext:job_id': 'false' },
        },
      }),
    );
    props.fleet.grantLaunch(fn);
    props.fleet.grantReadLogs(fn);
    props.fleet.allowWorkerRoutes(this.api);

    this.userPolicy = new iam.ManagedPolicy(this, 'UserPolicy', {
      description: 'barge users: submit, watch, cancel jobs and read their logs (each user sees only their own jobs)',
      statements: [
        new iam.PolicyStatement({
          actions: ['execute-api:Invoke'],
          resources: USER_ROUTES.map((route) =>
            this.api.arnForExecuteApi(route.method, route.path.replace('{id}', '*'), '$default'),
          ),
        }),
      ],
    });
    expectWildcards(this.userPolicy, [
      {
        finding: userRouteWildcard(),
        reason: "The user routes for any job id: the coordinator shows a job only to its owner (the caller's ARN)",
      },
    ]);
  }
}
