/**
 * `AmiPipeline`: the EC2 Image Builder pipeline that bakes the worker AMI (L1 `Cfn*`
 * resources: the L2 is experimental). Components come from `ami/components/*.yml`; the
 * recipe installs them on Ubuntu Server 24.04 LTS; the test phase boots the image and runs
 * `barge-worker --version` and `pg_dump --version` (docs/design-notes.md 20); distribution writes the
 * AMI id to the SSM parameter the worker launch template resolves. `make ami` uploads the
 * worker and its units to the artifact bucket, then starts this pipeline.
 *
 * Image Builder names its resources, and a component or recipe version cannot change in
 * place: the names carry a hash of their content, so a change creates new ones.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Stack } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as imagebuilder from 'aws-cdk-lib/aws-imagebuilder';
import { IBucket } from 'aws-cdk-lib/aws-s3';
import { Construct } from 'constructs';
import * as YAML from 'yaml';
import { acknowledgeManagedPolicy, expectWildcards } from '../nag';
import { ROOT_DEVICE, WorkerArchitecture } from './worker-fleet';

/** Where `make ami` puts the worker's files in the artifact bucket (read by `barge-worker.yml`). */
export const ARTIFACT_PREFIX = 'worker/';
/** Where the build writes its logs in the artifact bucket. */
export const BUILD_LOG_PREFIX = 'image-builder-logs/';
/** The repository's component documents. */
export const COMPONENTS_DIR = path.join(__dirname, '..', '..', '..', 'ami', 'components');

/** The public SSM parameter of Ubuntu Server 24.04 LTS for `architecture`. */
export function ubuntuImageParameter(architecture: WorkerArchitecture): string {
  const arch = architecture === 'arm64' ? 'arm64' : 'amd64';
  return `/aws/service/canonical/ubuntu/server/24.04/stable/current/${arch}/hvm/ebs-gp3/ami-id`;
}

/** A component document of `ami/components`. */
export interface ComponentDocument {
  /** File name without `.yml`. */
  readonly name: string;
  /** The YAML text. */
  readonly data: string;
}

/** Every `*.yml` of `dir`, sorted by name (the order the recipe installs them in). */
export function readComponents(dir: string): ComponentDocument[] {
  const files = fs.readdirSync(dir).filter((file) => file.endsWith('.yml')).sort();
  if (files.length === 0) {
    throw new Error(`AmiPipeline: no component documents (*.yml) in ${dir}`);
  }
  return files.map((file) => ({ name: file.replace(/\.yml$/, ''), data: fs.readFileSync(path.join(dir, file), 'utf8') }));
}

function hash(...parts: string[]): string {
  const digest = createHash('sha256');
  for (const part of parts) {
    digest.update(part).update('\0');
  }
  return digest.digest('hex').slice(0, 10);
}

export interface AmiPipelineProps {
  /** Prefix of the Image Builder resource names (e.g. `barge-dev`). */
  readonly namePrefix: string;
  /** Holds the worker binary and units (`make ami` uploads them) and the build logs. */
  readonly artifactBucket: IBucket;
  /** The SSM parameter distribution writes the AMI id to (must start with `/imagebuilder/`). */
  readonly amiParameterName: string;
  /** Architecture of the image. */
  readonly architecture: WorkerArchitecture;
  /** Instance types of the build and test instances (of `architecture`). */
  readonly instanceTypes: string[];
  /** The VPC of the build instance. */
  readonly vpc: ec2.IVpc;
  /** The subnet of the build instance (it needs the internet: apt, PostgreSQL's apt repository). */
  readonly subnetId: string;
  /** Component documents. @default every `ami/components/*.yml` */
  readonly components?: ComponentDocument[];
}

/** The worker image pipeline. */
export class AmiPipeline extends Construct {
  /** The pipeline `make ami` starts. */
  public readonly pipeline: imagebuilder.CfnImagePipeline;
  /** The recipe. */
  public readonly recipe: imagebuilder.CfnImageRecipe;
  /** The build instances' role. */
  public readonly instanceRole: iam.Role;
  /** The build instances' security group (egress to HTTP/HTTPS only). */
  public readonly securityGroup: ec2.SecurityGroup;
  /** The base image (an SSM parameter). */
  public readonly parentImage: string;

  constructor(scope: Construct, id: string, props: AmiPipelineProps) {
    super(scope, id);
    if (!props.amiParameterName.startsWith('/imagebuilder/')) {
      // Image Builder's service-linked role may write parameters under /imagebuilder/ only.
      throw new Error(`AmiPipeline: amiParameterName must start with /imagebuilder/, not ${props.amiParameterName}`);
    }
    if (props.instanceTypes.length === 0) {
      throw new Error('AmiPipeline: instanceTypes must name at least one instance type');
    }
    const components = props.components ?? readComponents(COMPONENTS_DIR);
    const stack = Stack.of(this);
    this.parentImage = `ssm:${ubuntuImageParameter(props.architecture)}`;

    const componentArns = components.map((doc) => {
      const component = new imagebuilder.CfnComponent(this, `Component-${doc.name}`, {
        name: `${props.namePrefix}-${doc.name}-${hash(doc.data)}`,
        version: '1.0.0',
        platform: 'Linux',
        description: `barge worker image: ${doc.name}`,
        data: doc.data,
      });
      return { name: doc.name, arn: component.attrArn, parameters: documentParameters(doc.data) };
    });

    const recipeHash = hash(this.parentImage, ROOT_DEVICE, ...components.map((doc) => doc.name + doc.data));
    this.recipe = new imagebuilder.CfnImageRecipe(this, 'Recipe', {
      name: `${props.namePrefix}-worker-${recipeHash}`,
      version: '1.0.0',
      description: 'barge worker: PostgreSQL 18 client tools, barge-worker and its systemd units',
      parentImage: this.parentImage,
      components: componentArns.map((component) => ({
        componentArn: component.arn,
        parameters: component.parameters.includes('ArtifactBucket')
          ? [{ name: 'ArtifactBucket', value: [props.artifactBucket.bucketName] }]
          : undefined,
      })),
      blockDeviceMappings: [
        { deviceName: ROOT_DEVICE, ebs: { volumeSize: 8, volumeType: 'gp3', encrypted: true, deleteOnTermination: true } },
      ],
      workingDirectory: '/var/tmp',
    });

    this.instanceRole = new iam.Role(this, 'InstanceRole', {
      assumedBy: new iam.ServicePrincipal('ec2.amazonaws.com'),
      description: 'barge image build: Image Builder and Systems Manager agents, the worker artifacts, build logs',
      managedPolicies: [
        iam.ManagedPolicy.fromAwsManagedPolicyName('AmazonSSMManagedInstanceCore'),
        iam.ManagedPolicy.fromAwsManagedPolicyName('EC2InstanceProfileForImageBuilder'),
      ],
    });
    for (const name of ['AmazonSSMManagedInstanceCore', 'EC2InstanceProfileForImageBuilder']) {
      acknowledgeManagedPolicy(
        this.instanceRole,
        name,
        'Image Builder drives its build and test instances through these agents; AWS maintains this policy for exactly that',
      );
    }
    expectWildcards(this.instanceRole, [
      {
        finding: /^Action::s3:(GetBucket|GetObject|List|Abort|PutObject|DeleteObject)\*$/,
        reason: "CDK's bucket grants, on the artifact bucket only, limited to its worker/ (read) and image-builder-logs/ (write) prefixes",
      },
      {
        finding: /^Resource::.+\/(worker|image-builder-logs)\/\*$/,
        reason: 'The worker artifacts make ami uploads (read) and the build logs (write), under their prefixes of the artifact bucket',
      },
    ]);
    props.artifactBucket.grantRead(this.instanceRole, `${ARTIFACT_PREFIX}*`);
    props.artifactBucket.grantPut(this.instanceRole, `${BUILD_LOG_PREFIX}*`);
    const profile = new iam.InstanceProfile(this, 'InstanceProfile', { role: this.instanceRole });

    this.securityGroup = new ec2.SecurityGroup(this, 'SecurityGroup', {
      vpc: props.vpc,
      description: 'barge image build: no ingress; egress to HTTP and HTTPS (packages, S3, Image Builder)',
      allowAllOutbound: false,
    });
    this.securityGroup.addEgressRule(ec2.Peer.anyIpv4(), ec2.Port.tcp(443), 'HTTPS');
    this.securityGroup.addEgressRule(ec2.Peer.anyIpv4(), ec2.Port.tcp(80), 'HTTP: Ubuntu archive (signed packages)');

    const infrastructure = new imagebuilder.CfnInfrastructureConfiguration(this, 'Infrastructure', {
      name: `${props.namePrefix}-worker-build`,
      description: 'barge worker image build and test instances',
      instanceProfileName: profile.instanceProfileName,
      instanceTypes: props.instanceTypes,
      subnetId: props.subnetId,
      securityGroupIds: [this.securityGroup.securityGroupId],
      terminateInstanceOnFailure: true,
      instanceMetadataOptions: { httpTokens: 'required', httpPutResponseHopLimit: 1 },
      logging: { s3Logs: { s3BucketName: props.artifactBucket.bucketName, s3KeyPrefix: BUILD_LOG_PREFIX.replace(/\/$/, '') } },
    });

    const distribution = new imagebuilder.CfnDistributionConfiguration(this, 'Distribution', {
      name: `${props.namePrefix}-worker`,
      description: 'barge worker AMI in this region; its id goes to the parameter the launch template resolves',
      distributions: [
        {
          region: stack.region,
          // A JSON property in CloudFormation: its keys are CloudFormation's.
          amiDistributionConfiguration: {
            Name: `${props.namePrefix}-worker-{{ imagebuilder:buildDate }}`,
            Description: 'barge worker',
            AmiTags: { Project: 'barge' },
          },
          ssmParameterConfigurations: [{ parameterName: props.amiParameterName, dataType: 'aws:ec2:image' }],
        },
      ],
    });

    this.pipeline = new imagebuilder.CfnImagePipeline(this, 'Pipeline', {
      name: `${props.namePrefix}-worker`,
      description: 'barge worker AMI (started by make ami)',
      imageRecipeArn: this.recipe.attrArn,
      infrastructureConfigurationArn: infrastructure.attrArn,
      distributionConfigurationArn: distribution.attrArn,
      imageTestsConfiguration: { imageTestsEnabled: true, timeoutMinutes: 60 },
      enhancedImageMetadataEnabled: true,
      status: 'ENABLED',
    });
  }
}

/** Names of the `parameters` a component document declares (`- Name: {type, …}` entries). */
export function documentParameters(data: string): string[] {
  const doc = YAML.parse(data) as { parameters?: Record<string, unknown>[] } | null;
  return (doc?.parameters ?? []).flatMap((entry) => Object.keys(entry));
}
