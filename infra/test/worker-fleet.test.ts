import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { App, RemovalPolicy, Stack, Validations } from 'aws-cdk-lib';
import { Match, Template } from 'aws-cdk-lib/assertions';
import { RetentionDays } from 'aws-cdk-lib/aws-logs';
import { WorkerFleet } from '../lib/constructs/worker-fleet';
import { acknowledgeExpectedWildcards } from '../lib/nag';
import { actions, build, logicalId, render, resources, roleStatements, Statement } from './support';

const dev = build('dev');
const service = dev.templates.service;
const LAUNCH_TEMPLATE = logicalId(service, 'AWS::EC2::LaunchTemplate', 'WorkersLaunchTemplate');
const DEFAULT_TYPES = ['m7g.large', 'm6g.large', 'c7g.xlarge'];
// A stage allowing more than its defaults (stage files set this; see infra/lib/config.ts).
const wider = build('staging', { workerAllowedInstanceTypes: [...DEFAULT_TYPES, 'm7g.2xlarge', 'r7g.xlarge'] });

function withAction(role: string, action: string, template: Template = service): Statement[] {
  return roleStatements(template, role).filter((s) => actions([s]).includes(action));
}

/** The RunInstances statement on `instance/*` of `role`. */
function launchInstances(role: string, template: Template = service): Statement {
  const statements = withAction(role, 'ec2:RunInstances', template).filter((s) => resources(s).some((r) => r.endsWith(':instance/*')));
  assert.equal(statements.length, 1, `${role}: one RunInstances statement on instances`);
  return statements[0];
}

/** The environment of the Lambda function whose logical id starts with `prefix`. */
function lambdaEnvironment(prefix: string, template: Template = service): Record<string, unknown> {
  return template.toJSON().Resources[logicalId(template, 'AWS::Lambda::Function', prefix)].Properties.Environment.Variables;
}

describe('WorkerFleet: the worker role', () => {
  const statements = roleStatements(service, 'WorkersRole');

  it('has no DynamoDB, KMS, EC2, S3 or IAM action at all', () => {
    const all = actions(statements);
    assert.ok(all.length > 0);
    for (const action of all) {
      assert.doesNotMatch(action, /^(dynamodb|kms|ec2|s3|iam|ssm|secretsmanager):/, action);
    }
    assert.deepEqual([...new Set(all)].sort(), ['execute-api:Invoke', 'logs:CreateLogStream', 'logs:PutLogEvents']);
  });

  it('may invoke the worker routes and no user route', () => {
    const [invoke] = statements.filter((s) => actions([s]).includes('execute-api:Invoke'));
    const arns = resources(invoke);
    assert.equal(arns.length, 6);
    for (const arn of arns) {
      assert.match(arn, /\/\$default\/POST\/jobs\/\*\/(claim|heartbeat|progress|size|finish|changes\/\*)$/);
    }
  });

  it("writes only its log group's streams", () => {
    const [write] = statements.filter((s) => actions([s]).includes('logs:PutLogEvents'));
    assert.deepEqual(resources(write), [`<${logicalId(service, 'AWS::Logs::LogGroup', 'WorkersLogs')}.Arn>:log-stream:*`]);
  });

  it('is assumable by EC2 only', () => {
    service.hasResourceProperties('AWS::IAM::Role', {
      AssumeRolePolicyDocument: { Statement: [Match.objectLike({ Principal: { Service: 'ec2.amazonaws.com' } })] },
      Description: Match.stringLikeRegexp('barge worker'),
    });
  });
});

describe('WorkerFleet: the launch template', () => {
  it('resolves the image from the SSM parameter, requires IMDSv2, terminates on shutdown, encrypts gp3', () => {
    service.hasResourceProperties('AWS::EC2::LaunchTemplate', {
      LaunchTemplateData: Match.objectLike({
        ImageId: 'resolve:ssm:/imagebuilder/barge/dev/worker-ami',
        MetadataOptions: { HttpTokens: 'required', HttpPutResponseHopLimit: 1 },
        InstanceInitiatedShutdownBehavior: 'terminate',
        BlockDeviceMappings: [
          { DeviceName: '/dev/sda1', Ebs: { Encrypted: true, VolumeType: 'gp3', VolumeSize: 16, DeleteOnTermination: true } },
        ],
        IamInstanceProfile: Match.anyValue(),
      }),
    });
  });

  it('is created after the AMI parameter placeholder, which never overwrites a built image', () => {
    const template = service.toJSON().Resources[LAUNCH_TEMPLATE];
    const placeholder = logicalId(service, 'Custom::AWS', 'WorkersAmiPlaceholder');
    assert.ok((template.DependsOn as string[]).some((dep) => dep.startsWith(placeholder)));
    const create = JSON.stringify(service.toJSON().Resources[placeholder].Properties.Create);
    assert.match(create, /Overwrite\\*":false/);
    assert.match(create, /ParameterAlreadyExists/);
    assert.match(create, /aws:ec2:image/);
  });

  it('has a security group with no ingress and egress to 443 and PostgreSQL only', () => {
    const groups = Object.entries(service.findResources('AWS::EC2::SecurityGroup')).filter(([id]) => id.startsWith('WorkersSecurityGroup'));
    assert.equal(groups.length, 1);
    const [, group] = groups[0] as [string, { Properties: { SecurityGroupIngress?: unknown[]; SecurityGroupEgress: { IpProtocol: string; FromPort: number; ToPort: number }[] } }];
    assert.equal(group.Properties.SecurityGroupIngress, undefined);
    assert.deepEqual(
      group.Properties.SecurityGroupEgress.map((rule) => `${rule.IpProtocol}/${rule.FromPort}-${rule.ToPort}`).sort(),
      ['tcp/443-443', 'tcp/5432-5432'],
    );
  });
});

describe('WorkerFleet: what launches and ends workers', () => {
  it('RunInstances only with the worker launch template, and the ManagedBy tag on instances and volumes', () => {
    for (const role of ['ApiCoordinatorRole', 'ReaperRole']) {
      const run = withAction(role, 'ec2:RunInstances');
      assert.equal(run.length, 3, role);
      for (const statement of run) {
        const condition = statement.Condition?.ArnLike?.['ec2:LaunchTemplate'];
        assert.ok(condition, `${role}: ${statement.Sid} has no launch-template condition`);
        assert.match(render(condition), new RegExp(`launch-template/<${LAUNCH_TEMPLATE}>$`));
      }
      const instances = launchInstances(role);
      assert.equal(resources(instances).length, 1, `${role}: instances apart from volumes`);
      assert.equal(instances.Condition?.StringEquals?.['aws:RequestTag/ManagedBy'], 'barge');
      const volumes = run.filter((s) => resources(s).some((r) => r.endsWith(':volume/*')));
      assert.equal(volumes.length, 1, role);
      assert.ok(resources(volumes[0]).every((r) => r.endsWith(':volume/*')), 'volumes apart from instances');
      assert.deepEqual(volumes[0].Condition?.StringEquals, { 'aws:RequestTag/ManagedBy': 'barge' });
    }
  });

  it('RunInstances only of the allowed instance types, on instances only (volumes have no type)', () => {
    for (const role of ['ApiCoordinatorRole', 'ReaperRole']) {
      assert.deepEqual(launchInstances(role).Condition?.StringEquals, { 'aws:RequestTag/ManagedBy': 'barge', 'ec2:InstanceType': DEFAULT_TYPES });
      assert.deepEqual(launchInstances(role, wider.templates.service).Condition?.StringEquals?.['ec2:InstanceType'], [
        ...DEFAULT_TYPES,
        'm7g.2xlarge',
        'r7g.xlarge',
      ]);
      for (const statement of withAction(role, 'ec2:RunInstances').filter((s) => !resources(s).some((r) => r.endsWith(':instance/*')))) {
        assert.equal(JSON.stringify(statement.Condition).includes('ec2:InstanceType'), false, `${role}: ${statement.Sid}`);
      }
    }
  });

  it('tags only while launching', () => {
    const [tag] = withAction('ApiCoordinatorRole', 'ec2:CreateTags');
    assert.deepEqual(tag.Condition, { StringEquals: { 'ec2:CreateAction': 'RunInstances' } });
  });

  it('passes only the worker role, only to EC2', () => {
    for (const role of ['ApiCoordinatorRole', 'ReaperRole']) {
      const [pass] = withAction(role, 'iam:PassRole');
      assert.deepEqual(pass.Condition, { StringEquals: { 'iam:PassedToService': 'ec2.amazonaws.com' } });
      assert.deepEqual(resources(pass), [`<${logicalId(service, 'AWS::IAM::Role', 'WorkersRole')}.Arn>`]);
    }
  });

  it("terminates only from the reaper, only instances launched from this stage's template and tagged ManagedBy=barge", () => {
    assert.equal(withAction('ApiCoordinatorRole', 'ec2:TerminateInstances').length, 0);
    const terminate = withAction('ReaperRole', 'ec2:TerminateInstances');
    assert.equal(terminate.length, 1);
    // The tag EC2 sets at launch (no caller can), valued with this stage's template id.
    assert.deepEqual(terminate[0].Condition, {
      StringEquals: { 'aws:ResourceTag/aws:ec2launchtemplate:id': { Ref: LAUNCH_TEMPLATE }, 'aws:ResourceTag/ManagedBy': 'barge' },
    });
    assert.deepEqual(resources(terminate[0]).map((r) => r.replace(/^.*:/, '')), ['instance/*']);
  });

  it("acknowledges the reaper's instance wildcard naming the launch-template condition", () => {
    const built = build('dev');
    acknowledgeExpectedWildcards(built.service);
    const policy = built.service.reaper.reaper.function.role!.node.findChild('DefaultPolicy').node.findChild('Resource');
    const acknowledged = Object.assign(
      {},
      ...policy.node.metadata.filter((m) => m.type === Validations.ACKNOWLEDGED_RULES_METADATA_KEY).map((m) => m.data as Record<string, string>),
    ) as Record<string, string>;
    const instance = Object.entries(acknowledged).filter(([id]) => /IAM5\[Resource::arn:.*:instance\/\*\]$/.test(id));
    assert.equal(instance.length, 1, Object.keys(acknowledged).join('\n'));
    assert.match(instance[0][1], /launched from this stage's launch template \(aws:ResourceTag\/aws:ec2launchtemplate:id/);
    assert.match(instance[0][1], /ManagedBy=barge/);
    // The same finding stands for the reaper's RunInstances statement on instances.
    assert.match(instance[0][1], /allowed instance type \(ec2:InstanceType\)/);
  });

  it('reads the AMI parameter to launch', () => {
    const [get] = withAction('ApiCoordinatorRole', 'ssm:GetParameters');
    assert.match(resources(get)[0], /:parameter\/imagebuilder\/barge\/dev\/worker-ami$/);
  });

  it('hands the launcher its template, subnets, types and log group', () => {
    const env = lambdaEnvironment('ApiCoordinatorFunction');
    assert.deepEqual(env.WORKER_LAUNCH_TEMPLATE, { Ref: LAUNCH_TEMPLATE });
    assert.equal(env.WORKER_INSTANCE_TYPES, 'm7g.large,m6g.large,c7g.xlarge');
    assert.equal(env.WORKER_SPOT, 'true');
    assert.equal(env.WORKER_ROOT_VOLUME_GIB, undefined, 'the launch template sizes the root volume');
    assert.match(render(env.WORKER_SUBNETS), /Subnet1.*,.*Subnet2/);
  });

  it('hands the coordinator and the reaper the allowed instance types, the list IAM allows', () => {
    for (const prefix of ['ApiCoordinatorFunction', 'ReaperFunction']) {
      assert.equal(lambdaEnvironment(prefix).WORKER_ALLOWED_INSTANCE_TYPES, DEFAULT_TYPES.join(','), prefix);
      assert.equal(
        lambdaEnvironment(prefix, wider.templates.service).WORKER_ALLOWED_INSTANCE_TYPES,
        [...DEFAULT_TYPES, 'm7g.2xlarge', 'r7g.xlarge'].join(','),
        prefix,
      );
      assert.equal(lambdaEnvironment(prefix, wider.templates.service).WORKER_INSTANCE_TYPES, DEFAULT_TYPES.join(','), prefix);
    }
  });
});

describe('WorkerFleet: network', () => {
  it('creates a VPC of public subnets, no NAT gateway, rejected flows logged, when none is configured', () => {
    service.resourceCountIs('AWS::EC2::VPC', 1);
    service.resourceCountIs('AWS::EC2::NatGateway', 0);
    service.hasResourceProperties('AWS::EC2::FlowLog', { TrafficType: 'REJECT' });
  });

  it('uses the configured subnets, and creates no VPC', () => {
    const own = build('staging', { network: { vpcId: 'vpc-0123456789abcdef1', subnetIds: ['subnet-0aaaaaaaaaaaaaaa1', 'subnet-0bbbbbbbbbbbbbbb2'] } });
    own.templates.service.resourceCountIs('AWS::EC2::VPC', 0);
    own.templates.service.hasResourceProperties('AWS::EC2::SecurityGroup', { VpcId: 'vpc-0123456789abcdef1' });
    own.templates.service.hasResourceProperties('AWS::Lambda::Function', {
      Environment: { Variables: Match.objectLike({ WORKER_SUBNETS: 'subnet-0aaaaaaaaaaaaaaa1,subnet-0bbbbbbbbbbbbbbb2' }) },
    });
    own.templates.pipeline.hasResourceProperties('AWS::ImageBuilder::InfrastructureConfiguration', { SubnetId: 'subnet-0aaaaaaaaaaaaaaa1' });
  });

  it('refuses a fleet with no instance type or no database port', () => {
    const base = {
      amiParameterName: '/imagebuilder/barge/t/worker-ami',
      placeholderImageParameter: '/aws/service/x',
      spot: false,
      rootVolumeGib: 8,
      logRetention: RetentionDays.ONE_DAY,
      removalPolicy: RemovalPolicy.DESTROY,
    };
    const stack = new Stack(new App(), 'S');
    assert.throws(() => new WorkerFleet(stack, 'A', { ...base, instanceTypes: [], databasePorts: [5432] }), /instanceTypes/);
    assert.throws(() => new WorkerFleet(stack, 'B', { ...base, instanceTypes: ['m7g.large'], databasePorts: [] }), /databasePorts/);
  });

  it('refuses an allow-list that is empty or misses a default instance type', () => {
    const base = {
      amiParameterName: '/imagebuilder/barge/t/worker-ami',
      placeholderImageParameter: '/aws/service/x',
      spot: false,
      rootVolumeGib: 8,
      databasePorts: [5432],
      logRetention: RetentionDays.ONE_DAY,
      removalPolicy: RemovalPolicy.DESTROY,
    };
    const stack = new Stack(new App(), 'S');
    assert.throws(() => new WorkerFleet(stack, 'A', { ...base, instanceTypes: ['m7g.large'], allowedInstanceTypes: [] }), /allowedInstanceTypes must name/);
    assert.throws(
      () => new WorkerFleet(stack, 'B', { ...base, instanceTypes: ['m7g.large', 'm6g.large'], allowedInstanceTypes: ['m7g.large', 'c7g.xlarge'] }),
      /allowedInstanceTypes must include every default instance type; missing m6g\.large/,
    );
    assert.deepEqual(new WorkerFleet(stack, 'C', { ...base, instanceTypes: ['m7g.large'] }).allowedInstanceTypes, ['m7g.large']);
  });
});
