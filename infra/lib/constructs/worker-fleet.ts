/**
 * `WorkerFleet`: what a worker instance is launched with, and the least a worker may do.
 *
 * - the worker role (via its instance profile) may call the worker routes of the API and
 *   write its job's log streams — no DynamoDB, no KMS, no EC2: a worker learns its job's
 *   spec and credentials only by claiming them from the coordinator (docs/design-notes.md 8);
 * - the launch template: image resolved at launch from the SSM parameter the image pipeline
 *   writes, IMDSv2 required, shutdown behaviour `terminate` (the worker powers off when
 *   done), encrypted gp3 root;
 * - a security group with no ingress and egress only to HTTPS and the database ports;
 * - the network: the configured subnets, or a VPC of public subnets created here.
 *
 * `grantLaunch`/`grantTerminate`/`grantReadLogs` give the coordinator and the reaper exactly
 * what `Ec2Launcher` and `CloudWatchLogs` (crates/aws) call: launches only from this
 * fleet's launch template and only of the allowed instance types, terminations only of
 * instances launched from this fleet's launch template — so stages can share an account
 * and region without one stage's reaper ending another stage's workers.
 */
import { Arn, Fn, RemovalPolicy, Stack } from 'aws-cdk-lib';
import { IHttpApi } from 'aws-cdk-lib/aws-apigatewayv2';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as ssm from 'aws-cdk-lib/aws-ssm';
import * as cr from 'aws-cdk-lib/custom-resources';
import { Construct } from 'constructs';
import { NetworkConfig } from '../config';
import { acknowledgeCdkProvider, expectWildcards } from '../nag';

/** The tag every barge instance carries (`MANAGED_BY` in crates/aws/src/ec2.rs). */
export const MANAGED_BY = { key: 'ManagedBy', value: 'barge' } as const;

/**
 * The tag EC2 itself puts on every instance launched from a launch template, valued with the
 * template's id. Its `aws:` prefix is reserved to AWS: no caller can create, change or remove
 * it, so — unlike `ManagedBy`, which anyone allowed to tag an instance could add — it proves
 * which template an instance was launched from.
 */
export const LAUNCH_TEMPLATE_TAG = 'aws:ec2launchtemplate:id';

/** The API routes a worker calls (crates/client); users' routes are the others. */
export const WORKER_ROUTES = [
  { method: 'POST', path: '/jobs/{id}/claim' },
  { method: 'POST', path: '/jobs/{id}/heartbeat' },
  { method: 'POST', path: '/jobs/{id}/progress' },
  { method: 'POST', path: '/jobs/{id}/size' },
  { method: 'POST', path: '/jobs/{id}/finish' },
  { method: 'POST', path: '/jobs/{id}/changes/{n}' },
] as const;

/** CPU architecture of the workers (and of the image the pipeline builds). */
export type WorkerArchitecture = 'arm64' | 'x86_64';

/** The root device of the worker image's base (Ubuntu Server 24.04 LTS). */
export const ROOT_DEVICE = '/dev/sda1';

export interface WorkerFleetProps {
  /** SSM parameter holding the worker AMI id (data type `aws:ec2:image`). */
  readonly amiParameterName: string;
  /**
   * Public parameter of the image a fresh deployment points the AMI parameter at until the
   * first `make ami` (a plain OS: a worker launched from it never claims its job and the
   * reaper ends it).
   */
  readonly placeholderImageParameter: string;
  /** Instance types tried in order for a job that names none. */
  readonly instanceTypes: string[];
  /**
   * Instance types a job may name (`options.instance_type`), handed to the Lambdas as
   * `WORKER_ALLOWED_INSTANCE_TYPES`; the launch grant allows no other (`ec2:InstanceType`).
   * Must include every entry of `instanceTypes`. @default instanceTypes
   */
  readonly allowedInstanceTypes?: string[];
  /** Spot first for resumable jobs. */
  readonly spot: boolean;
  /** Root volume size, GiB. */
  readonly rootVolumeGib: number;
  /** Ports databases listen on (egress). */
  readonly databasePorts: number[];
  /** Existing subnets; @default a VPC with public subnets in two AZs, no NAT gateway. */
  readonly network?: NetworkConfig;
  /** Retention of the workers' logs. */
  readonly logRetention: logs.RetentionDays;
  /** What happens to the workers' logs when the stack is deleted. */
  readonly removalPolicy: RemovalPolicy;
}

/** The worker fleet. */
export class WorkerFleet extends Construct {
  /** The role workers run as. */
  public readonly role: iam.Role;
  /** The instance profile of `role`. */
  public readonly instanceProfile: iam.InstanceProfile;
  /** The template every worker is launched from. */
  public readonly launchTemplate: ec2.LaunchTemplate;
  /** No ingress; egress to 443 and the database ports only. */
  public readonly securityGroup: ec2.SecurityGroup;
  /** The VPC workers run in. */
  public readonly vpc: ec2.IVpc;
  /** The subnets workers run in. */
  public readonly subnetIds: string[];
  /** Workers' logs, a stream per job attempt (`{job}/{attempt}`). */
  public readonly logGroup: logs.LogGroup;
  /** The SSM parameter the launch template resolves the image from. */
  public readonly amiParameterName: string;
  /** Instance types a job may name; includes every default instance type. */
  public readonly allowedInstanceTypes: string[];
  private readonly props: WorkerFleetProps;

  constructor(scope: Construct, id: string, props: WorkerFleetProps) {
    super(scope, id);
    if (props.instanceTypes.length === 0) {
      throw new Error('WorkerFleet: instanceTypes must name at least one instance type');
    }
    if (props.databasePorts.length === 0) {
      throw new Error('WorkerFleet: databasePorts must name at least one port');
    }
    const allowed = props.allowedInstanceTypes ?? props.instanceTypes;
    if (allowed.length === 0) {
      throw new Error('WorkerFleet: allowedInstanceTypes must name at least one instance type');
    }
    // IAM refuses a launch of any other type, so a default type outside the list would make
    // every job that names no type fail to launch.
    const missing = props.instanceTypes.filter((type) => !allowed.includes(type));
    if (missing.length > 0) {
      throw new Error(`WorkerFleet: allowedInstanceTypes must include every default instance type; missing ${missing.join(', ')}`);
    }
    this.allowedInstanceTypes = [...allowed];
    this.props = props;
    this.amiParameterName = props.amiParameterName;

    if (props.network) {
      // Only the VPC id is used (by the security groups); the subnets are given by id.
      this.vpc = ec2.Vpc.fromVpcAttributes(this, 'Vpc', { vpcId: props.network.vpcId, availabilityZones: Fn.getAzs() });
      this.subnetIds = [...props.network.subnetIds];
    } else {
      const vpc = new ec2.Vpc(this, 'Vpc', {
        maxAzs: 2,
        natGateways: 0,
        subnetConfiguration: [{ name: 'workers', subnetType: ec2.SubnetType.PUBLIC, cidrMask: 24 }],
        restrictDefaultSecurityGroup: false,
      });
      const flowLogs = new logs.LogGroup(this, 'FlowLogs', {
        retention: props.logRetention,
        removalPolicy: props.removalPolicy,
      });
      vpc.addFlowLog('FlowLog', {
        destination: ec2.FlowLogDestination.toCloudWatchLogs(flowLogs),
        trafficType: ec2.FlowLogTrafficType.REJECT,
      });
      this.vpc = vpc;
      this.subnetIds = vpc.publicSubnets.map((subnet) => subnet.subnetId);
    }

    this.securityGroup = new ec2.SecurityGroup(this, 'SecurityGroup', {
      vpc: this.vpc,
      description: 'barge workers: no ingress; egress to HTTPS (API, logs, S3) and the database ports',
      allowAllOutbound: false,
    });
    this.securityGroup.addEgressRule(ec2.Peer.anyIpv4(), ec2.Port.tcp(443), 'HTTPS: the barge API, CloudWatch Logs');
    for (const port of props.databasePorts) {
      this.securityGroup.addEgressRule(ec2.Peer.anyIpv4(), ec2.Port.tcp(port), `PostgreSQL on ${port}`);
    }

    this.logGroup = new logs.LogGroup(this, 'Logs', {
      retention: props.logRetention,
      removalPolicy: props.removalPolicy,
    });

    this.role = new iam.Role(this, 'Role', {
      assumedBy: new iam.ServicePrincipal('ec2.amazonaws.com'),
      description: 'barge worker: the worker routes of the API and its own log streams, nothing else',
    });
    expectWildcards(this.role, [
      { finding: /^Resource::<[A-Za-z0-9]+\.Arn>:log-stream:\*$/, reason: "The workers' log group: a stream per job attempt, named when the job runs" },
    ]);
    this.role.addToPolicy(
      new iam.PolicyStatement({
        actions: ['logs:CreateLogStream', 'logs:PutLogEvents'],
        resources: [`${this.logGroup.logGroupArn}:log-stream:*`],
      }),
    );
    this.instanceProfile = new iam.InstanceProfile(this, 'InstanceProfile', { role: this.role });

    // The launch template resolves its image from the parameter when an instance launches,
    // and EC2 checks that the parameter exists when the template is created: a first
    // deployment writes a placeholder (never overwriting the image `make ami` wrote).
    const placeholder = this.placeholderAmi(props);

    this.launchTemplate = new ec2.LaunchTemplate(this, 'LaunchTemplate', {
      machineImage: ec2.MachineImage.resolveSsmParameterAtLaunch(props.amiParameterName),
      instanceProfile: this.instanceProfile,
      securityGroup: this.securityGroup,
      requireImdsv2: true,
      httpPutResponseHopLimit: 1,
      instanceInitiatedShutdownBehavior: ec2.InstanceInitiatedShutdownBehavior.TERMINATE,
      blockDevices: [
        {
          deviceName: ROOT_DEVICE,
          volume: ec2.BlockDeviceVolume.ebs(props.rootVolumeGib, {
            volumeType: ec2.EbsDeviceVolumeType.GP3,
            encrypted: true,
            deleteOnTermination: true,
          }),
        },
      ],
    });
    this.launchTemplate.node.addDependency(placeholder);
  }

  private placeholderAmi(props: WorkerFleetProps): cr.AwsCustomResource {
    const stack = Stack.of(this);
    const parameterArn = this.amiParameterArn();
    const image = ssm.StringParameter.valueForTypedStringParameterV2(
      this,
      props.placeholderImageParameter,
      ssm.ParameterValueType.AWS_EC2_IMAGE_ID,
    );
    const resource = new cr.AwsCustomResource(this, 'AmiPlaceholder', {
      onCreate: {
        service: 'SSM',
        action: 'PutParameter',
        parameters: {
          Name: props.amiParameterName,
          Value: image,
          Type: 'String',
          DataType: 'aws:ec2:image',
          Overwrite: false,
          Description: 'barge worker AMI (written by the image pipeline; a plain OS image until the first make ami)',
        },
        physicalResourceId: cr.PhysicalResourceId.of(props.amiParameterName),
        ignoreErrorCodesMatching: 'ParameterAlreadyExists',
      },
      onDelete: {
        service: 'SSM',
        action: 'DeleteParameter',
        parameters: { Name: props.amiParameterName },
        ignoreErrorCodesMatching: 'ParameterNotFound',
      },
      policy: cr.AwsCustomResourcePolicy.fromStatements([
        new iam.PolicyStatement({ actions: ['ssm:PutParameter', 'ssm:DeleteParameter'], resources: [parameterArn] }),
      ]),
      installLatestAwsSdk: false,
    });
    // The provider is CDK's singleton Lambda for AwsCustomResource, shared by the stack.
    acknowledgeCdkProvider(
      stack,
      'AWS679f53fac002430cb0da5b7982bd2287',
      'AwsCustomResource provider (writes the AMI placeholder parameter once)',
    );
    return resource;
  }

  /** ARN of the AMI parameter. */
  public amiParameterArn(): string {
    return Arn.format(
      { service: 'ssm', resource: 'parameter', resourceName: this.amiParameterName.replace(/^\//, '') },
      Stack.of(this),
    );
  }

  /** ARN of the launch template. */
  public launchTemplateArn(): string {
    return Arn.format(
      { service: 'ec2', resource: 'launch-template', resourceName: this.launchTemplate.launchTemplateId ?? '' },
      Stack.of(this),
    );
  }

  /**
   * The environment `Ec2LauncherConfig::from_vars` (crates/aws) reads, plus the role name
   * the coordinator recognises workers by and the instance types a job may name (the list
   * `grantLaunch` allows: a job naming another type can be refused when it is submitted
   * rather than fail at launch). The root volume comes from the launch template.
   */
  public launcherEnvironment(): Record<string, string> {
    return {
      WORKER_LAUNCH_TEMPLATE: this.launchTemplate.launchTemplateId ?? '',
      WORKER_INSTANCE_TYPES: this.props.instanceTypes.join(','),
      WORKER_ALLOWED_INSTANCE_TYPES: this.allowedInstanceTypes.join(','),
      WORKER_SPOT: String(this.props.spot),
      WORKER_SUBNETS: this.subnetIds.join(','),
      WORKER_LOG_GROUP: this.logGroup.logGroupName,
      WORKER_ROLE_NAME: this.role.roleName,
    };
  }

  /**
   * Lets `grantee` launch workers: RunInstances only from this launch template, only of the
   * allowed instance types, with the `ManagedBy=barge` tag on the instance and its volumes;
   * tags only as part of that launch; the worker role passed only to EC2; the image
   * parameter read.
   */
  public grantLaunch(grantee: iam.IGrantable): void {
    const stack = Stack.of(this);
    const ec2Arn = (resource: string) => `arn:${stack.partition}:ec2:${stack.region}:${stack.account}:${resource}`;
    const fromTemplate = { ArnLike: { 'ec2:LaunchTemplate': this.launchTemplateArn() } };
    const tagged = { [`aws:RequestTag/${MANAGED_BY.key}`]: MANAGED_BY.value };
    expectWildcards(grantee.grantPrincipal, [
      {
        finding: /^Resource::arn:.*:ec2:.*:(instance|volume|subnet|security-group|network-interface|spot-instances-request|image)\/\*$/,
        reason:
          'RunInstances names new instances, volumes and interfaces at launch; every statement requires the worker launch template (ec2:LaunchTemplate), instances also an allowed instance type (ec2:InstanceType), instances and volumes the ManagedBy=barge request tag, CreateTags only during RunInstances',
      },
    ]);
    const add = (statement: iam.PolicyStatement) => grantee.grantPrincipal.addToPrincipalPolicy(statement);
    // ec2:InstanceType is a key of the instance resource only: a statement that also named
    // volumes would match no volume, and the launch would be refused.
    add(
      new iam.PolicyStatement({
        sid: 'LaunchTaggedWorkers',
        actions: ['ec2:RunInstances'],
        resources: [ec2Arn('instance/*')],
        conditions: { ...fromTemplate, StringEquals: { ...tagged, 'ec2:InstanceType': [...this.allowedInstanceTypes] } },
      }),
    );
    add(
      new iam.PolicyStatement({
        sid: 'LaunchTaggedVolumes',
        actions: ['ec2:RunInstances'],
        resources: [ec2Arn('volume/*')],
        conditions: { ...fromTemplate, StringEquals: tagged },
      }),
    );
    add(
      new iam.PolicyStatement({
        sid: 'LaunchFromTemplate',
        actions: ['ec2:RunInstances'],
        resources: [
          this.launchTemplateArn(),
          `arn:${stack.partition}:ec2:${stack.region}::image/*`,
          ec2Arn('subnet/*'),
          ec2Arn('security-group/*'),
          ec2Arn('network-interface/*'),
          ec2Arn('spot-instances-request/*'),
        ],
        conditions: fromTemplate,
      }),
    );
    add(
      new iam.PolicyStatement({
        sid: 'TagOnLaunch',
        actions: ['ec2:CreateTags'],
        resources: [ec2Arn('instance/*'), ec2Arn('volume/*'), ec2Arn('spot-instances-request/*')],
        conditions: { StringEquals: { 'ec2:CreateAction': 'RunInstances' } },
      }),
    );
    add(
      new iam.PolicyStatement({
        sid: 'PassWorkerRole',
        actions: ['iam:PassRole'],
        resources: [this.role.roleArn],
        conditions: { StringEquals: { 'iam:PassedToService': 'ec2.amazonaws.com' } },
      }),
    );
    add(
      new iam.PolicyStatement({
        sid: 'SpotServiceLinkedRole',
        actions: ['iam:CreateServiceLinkedRole'],
        resources: [
          `arn:${stack.partition}:iam::${stack.account}:role/aws-service-role/spot.amazonaws.com/AWSServiceRoleForEC2Spot`,
        ],
        conditions: { StringEquals: { 'iam:AWSServiceName': 'spot.amazonaws.com' } },
      }),
    );
    add(new iam.PolicyStatement({ sid: 'ResolveImage', actions: ['ssm:GetParameters'], resources: [this.amiParameterArn()] }));
  }

  /**
   * Lets `grantee` list instances and terminate this fleet's workers, and only them (the
   * reaper: instances whose job ended or went silent, orphans): instances launched from this
   * fleet's launch template and tagged `ManagedBy=barge`. Another stage's workers come from
   * another template, so one stage's reaper cannot end them.
   */
  public grantTerminate(grantee: iam.IGrantable): void {
    const stack = Stack.of(this);
    expectWildcards(grantee.grantPrincipal, [
      {
        finding: /^Resource::\*$/,
        reason: "ec2:DescribeInstances supports no resource-level permission (it only reads; TerminateInstances is limited to this stage's workers)",
      },
      {
        finding: /^Resource::arn:.*:ec2:.*:instance\/\*$/,
        reason: `TerminateInstances only on instances launched from this stage's launch template (aws:ResourceTag/${LAUNCH_TEMPLATE_TAG}, set by EC2, not by callers) and tagged ManagedBy=barge`,
      },
    ]);
    // IAM evaluates ec2:LaunchTemplate on RunInstances only, not on an existing instance;
    // the tag EC2 put on the instance at launch is what identifies its template afterwards.
    grantee.grantPrincipal.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'TerminateWorkers',
        actions: ['ec2:TerminateInstances'],
        resources: [`arn:${stack.partition}:ec2:${stack.region}:${stack.account}:instance/*`],
        conditions: {
          StringEquals: {
            [`aws:ResourceTag/${LAUNCH_TEMPLATE_TAG}`]: this.launchTemplate.launchTemplateId ?? '',
            [`aws:ResourceTag/${MANAGED_BY.key}`]: MANAGED_BY.value,
          },
        },
      }),
    );
    // DescribeInstances supports no resource-level permission.
    grantee.grantPrincipal.addToPrincipalPolicy(
      new iam.PolicyStatement({ sid: 'ListWorkers', actions: ['ec2:DescribeInstances'], resources: ['*'] }),
    );
  }

  /** Lets `grantee` read the workers' log streams (`GET /jobs/{id}/logs`). */
  public grantReadLogs(grantee: iam.IGrantable): void {
    expectWildcards(grantee.grantPrincipal, [
      { finding: /^Resource::<[A-Za-z0-9]+\.Arn>:log-stream:\*$/, reason: "The workers' log group: a job's streams are read by the job's owner only (the coordinator checks)" },
    ]);
    grantee.grantPrincipal.addToPrincipalPolicy(
      new iam.PolicyStatement({
        actions: ['logs:GetLogEvents'],
        resources: [`${this.logGroup.logGroupArn}:log-stream:*`],
      }),
    );
  }

  /** Lets workers call the worker routes of `api`, and no other route. */
  public allowWorkerRoutes(api: IHttpApi): void {
    expectWildcards(this.role, [
      {
        finding: /^Resource::arn:.*:execute-api:.*:<[A-Za-z0-9]+>\/\$default\/POST\/jobs\/\*\/(claim|heartbeat|progress|size|finish|changes\/\*)$/,
        reason: 'The worker routes for any job id (and change number): the coordinator serves a job only to the instance launched for it',
      },
    ]);
    this.role.addToPolicy(
      new iam.PolicyStatement({
        actions: ['execute-api:Invoke'],
        resources: WORKER_ROUTES.map((route) =>
          api.arnForExecuteApi(route.method, route.path.replace(/\{[a-z]+\}/g, '*'), '$default'),
        ),
      }),
    );
  }
}
