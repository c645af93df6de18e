import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { App, Duration, RemovalPolicy, Stack } from 'aws-cdk-lib';
import { Match } from 'aws-cdk-lib/assertions';
import * as kms from 'aws-cdk-lib/aws-kms';
import { RetentionDays } from 'aws-cdk-lib/aws-logs';
import { CoordinatorApi, USER_ROUTES } from '../lib/constructs/coordinator-api';
import { WORKER_ROUTES } from '../lib/constructs/worker-fleet';
import { actions, build, logicalId, render, resources, roleStatements } from './support';

const dev = build('dev');
const service = dev.templates.service;
const REPO = path.join(__dirname, '..', '..');

describe('CoordinatorApi', () => {
  it('requires IAM authorization on every route', () => {
    const routes = Object.values(service.findResources('AWS::ApiGatewayV2::Route')) as { Properties: { RouteKey: string; AuthorizationType?: string } }[];
    assert.ok(routes.length > 0);
    for (const route of routes) {
      assert.equal(route.Properties.AuthorizationType, 'AWS_IAM', route.Properties.RouteKey);
    }
  });

  it('routes exactly what the coordinator serves (functions/coordinator/src/routes.rs)', () => {
    const rust = fs.readFileSync(path.join(REPO, 'functions/coordinator/src/routes.rs'), 'utf8');
    const served = new Set<string>();
    for (const [, route, handlers] of rust.matchAll(/\.route\("([^"]+)",\s*([^)]*\)(?:\.[a-z]+\([^)]*\))*)\)/g)) {
      for (const [, method] of handlers.matchAll(/\b(get|post|put|delete|patch)\(/g)) {
        served.add(`${method.toUpperCase()} ${route}`);
      }
    }
    const keys = (Object.values(service.findResources('AWS::ApiGatewayV2::Route')) as { Properties: { RouteKey: string } }[])
      .map((r) => r.Properties.RouteKey)
      .sort();
    assert.deepEqual(keys, [...served].sort());
    assert.deepEqual([...USER_ROUTES, ...WORKER_ROUTES].map((r) => `${r.method} ${r.path}`).sort(), keys);
  });

  it('logs access and throttles on the $default stage', () => {
    service.hasResourceProperties('AWS::ApiGatewayV2::Stage', {
      StageName: '$default',
      AutoDeploy: true,
      AccessLogSettings: { DestinationArn: Match.anyValue(), Format: Match.stringLikeRegexp('requestId') },
      DefaultRouteSettings: { ThrottlingRateLimit: 50, ThrottlingBurstLimit: 100 },
    });
  });

  it('is an arm64 Rust function whose log group, with retention, exists before it', () => {
    const fn = logicalId(service, 'AWS::Lambda::Function', 'ApiCoordinatorFunction');
    const logs = logicalId(service, 'AWS::Logs::LogGroup', 'ApiCoordinatorLogs');
    service.hasResource('AWS::Lambda::Function', {
      Properties: Match.objectLike({
        Architectures: ['arm64'],
        Runtime: 'provided.al2023',
        Handler: 'bootstrap',
        LoggingConfig: Match.objectLike({ LogGroup: { Ref: logs }, LogFormat: 'JSON' }),
      }),
      DependsOn: Match.arrayWith([logs]),
    });
    assert.ok(service.toJSON().Resources[fn]);
    service.hasResourceProperties('AWS::Logs::LogGroup', { RetentionInDays: 14 });
    const groups = Object.values(service.findResources('AWS::Logs::LogGroup')) as { Properties: { RetentionInDays?: number } }[];
    for (const group of groups) {
      assert.ok(group.Properties.RetentionInDays, 'every log group has a retention');
    }
  });

  it('gives the Lambdas every variable their mains read (docs/design-notes.md 24)', () => {
    const rustVars = (file: string, pattern: RegExp) =>
      [...fs.readFileSync(path.join(REPO, file), 'utf8').matchAll(pattern)].map((m) => m[1]);
    const launcher = rustVars('crates/aws/src/ec2.rs', /required\("([A-Z_]+)"\)/g);
    const expected: Record<string, string[]> = {
      ApiCoordinatorFunction: [...rustVars('functions/coordinator/src/main.rs', /var\("([A-Z_]+)"\)/g), ...launcher],
      ReaperFunction: [...rustVars('functions/reaper/src/main.rs', /var\("([A-Z_]+)"\)/g), ...launcher],
    };
    for (const [prefix, vars] of Object.entries(expected)) {
      assert.ok(vars.length >= 3, `found the variables ${prefix} reads`);
      const fn = service.toJSON().Resources[logicalId(service, 'AWS::Lambda::Function', prefix)];
      const env = Object.keys(fn.Properties.Environment.Variables);
      for (const name of vars) {
        assert.ok(env.includes(name), `${prefix} lacks ${name}`);
      }
    }
  });

  it('seals only with the job id as encryption context', () => {
    const seal = roleStatements(service, 'ApiCoordinatorRole').find((s) => s.Sid === 'SealJobCredentials');
    assert.ok(seal);
    assert.deepEqual([...actions([seal])].sort(), ['kms:Decrypt', 'kms:Encrypt']);
    assert.deepEqual(seal.Condition, {
      'ForAllValues:StringEquals': { 'kms:EncryptionContextKeys': ['job_id'] },
      Null: { 'kms:EncryptionContext:job_id': 'false' },
    });
    assert.equal(roleStatements(service, 'ReaperRole').filter((s) => actions([s]).some((a) => a === 'kms:Decrypt') && !s.Condition?.StringEquals?.['kms:ViaService']).length, 0, 'the reaper never unseals');
  });

  it("reads the workers' logs and nothing else of CloudWatch Logs", () => {
    const logs = roleStatements(service, 'ApiCoordinatorRole').filter((s) => actions([s]).some((a) => a.startsWith('logs:')));
    const reads = logs.filter((s) => actions([s]).includes('logs:GetLogEvents'));
    assert.equal(reads.length, 1);
    assert.deepEqual(resources(reads[0]), [`<${logicalId(service, 'AWS::Logs::LogGroup', 'WorkersLogs')}.Arn>:log-stream:*`]);
  });

  it('offers users a policy for the user routes only', () => {
    const policy = Object.values(service.findResources('AWS::IAM::ManagedPolicy'))[0] as { Properties: { PolicyDocument: { Statement: { Action: string; Resource: unknown[] }[] } } };
    const [statement] = policy.Properties.PolicyDocument.Statement;
    assert.equal(statement.Action, 'execute-api:Invoke');
    const arns = statement.Resource.map(render);
    assert.equal(arns.length, USER_ROUTES.length);
    for (const arn of arns) {
      assert.doesNotMatch(arn, /\/(claim|heartbeat|progress|size|finish|changes\/\*)$/);
    }
  });

  it('exports what barge configure --stack reads', () => {
    const outputs = service.toJSON().Outputs;
    for (const name of ['ApiEndpoint', 'Region', 'Stage', 'UserPolicyArn', 'WorkerLogGroup']) {
      assert.ok(outputs[name], name);
    }
    const cli = fs.readFileSync(path.join(REPO, 'cli/src/configure.rs'), 'utf8');
    assert.match(cli, /ENDPOINT_OUTPUT: &str = "ApiEndpoint"/);
  });

  it('refuses invalid limits', () => {
    const stack = new Stack(new App(), 'S');
    const fleet = build('dev').service.fleet;
    const props = {
      table: dev.stateful.jobs,
      key: new kms.Key(stack, 'K'),
      fleet,
      deadlines: { launchTimeout: Duration.minutes(10), heartbeatTimeout: Duration.minutes(2) },
      rateLimit: 10,
      burstLimit: 10,
      logRetention: RetentionDays.ONE_DAY,
      removalPolicy: RemovalPolicy.DESTROY,
    };
    assert.throws(() => new CoordinatorApi(stack, 'A', { ...props, maxActiveJobs: 0 }), /maxActiveJobs/);
    assert.throws(() => new CoordinatorApi(stack, 'B', { ...props, maxActiveJobs: 1, burstLimit: 0 }), /burstLimit/);
  });
});
