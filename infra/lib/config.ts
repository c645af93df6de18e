/**
 * Per-stage configuration of the barge CDK app: one typed object per deployment (dev,
 * staging, prod, another account or region), validated once, before any construct is built.
 * Nothing here names an account, a region or a physical resource: those come from the
 * CDK environment (`CDK_DEFAULT_ACCOUNT`/`CDK_DEFAULT_REGION`, i.e. the AWS profile used to
 * deploy) and from CloudFormation's generated names (docs/design-notes.md 24).
 */
import { Duration, RemovalPolicy } from 'aws-cdk-lib';
import { RetentionDays } from 'aws-cdk-lib/aws-logs';

/** Where workers run: an existing VPC's subnets, or (unset) a VPC the app creates. */
export interface NetworkConfig {
  /** The VPC id (`vpc-…`) of the subnets. */
  readonly vpcId: string;
  /**
   * Subnets workers and the image build run in. Private subnets need a NAT gateway (or
   * VPC endpoints) to reach the API, CloudWatch Logs and S3; the databases are reached
   * through the VPC.
   */
  readonly subnetIds: string[];
}

/** Everything that differs between two deployments of barge. */
export interface StageConfig {
  /** Short stage name (lowercase letters, digits, `-`); prefixes stack names. */
  readonly stage: string;
  /** The account to deploy to. @default the account of the credentials in use */
  readonly account?: string;
  /** The region to deploy to. @default the region of the profile in use */
  readonly region?: string;
  /**
   * Existing network for the workers and the image build.
   * @default a VPC with public subnets in two availability zones and no NAT gateway
   */
  readonly network?: NetworkConfig;
  /** CPU architecture of the workers and their image. @default 'arm64' (Graviton) */
  readonly workerArchitecture: 'arm64' | 'x86_64';
  /** Instance types tried in order for a job that names none. @default ['m7g.large', 'm6g.large', 'c7g.xlarge'] */
  readonly workerInstanceTypes: string[];
  /**
   * Instance types a job may ask for (`options.instance_type`), all of `workerArchitecture`
   * and including every `workerInstanceTypes` entry. The coordinator and the reaper get the
   * list (`WORKER_ALLOWED_INSTANCE_TYPES`) and their launch permission allows no other type,
   * so an API user cannot run, say, a GPU or 48xlarge instance on the account's bill.
   * @default the stage's `workerInstanceTypes`
   */
  readonly workerAllowedInstanceTypes: string[];
  /** Run resumable jobs on spot capacity first, on-demand when there is none. @default true */
  readonly workerSpot: boolean;
  /** Worker root volume (encrypted gp3), GiB. The worker streams, so this holds only the OS and logs. @default 16 */
  readonly workerRootVolumeGib: number;
  /** Ports the workers may reach databases on (egress). @default [5432] */
  readonly databasePorts: number[];
  /** Jobs running at once across all users; more are refused with 429. @default 20 */
  readonly maxActiveJobs: number;
  /** API throttling: steady requests per second, and burst. @default 50 and 100 */
  readonly apiRateLimit: number;
  /** @default 100 */
  readonly apiBurstLimit: number;
  /** Retention of the Lambdas', the API's and the workers' logs. @default one month */
  readonly logRetention: RetentionDays;
  /**
   * What `cdk destroy` does with the job table, the key, the artifact bucket and the logs.
   * @default RETAIN for a stage named `prod`, DESTROY otherwise
   */
  readonly removalPolicy: RemovalPolicy;
  /** SSM parameter holding the worker AMI id; the image pipeline writes it. @default `/imagebuilder/barge/<stage>/worker-ami` */
  readonly amiParameterName: string;
  /** Instance types of the image build. @default ['c7g.large'] */
  readonly imageBuildInstanceTypes: string[];
  /** How long the reaper waits for a launched worker to claim its job. @default 10 minutes */
  readonly launchTimeout: Duration;
  /** How long a running job may stay silent before the reaper relaunches it. @default 2 minutes */
  readonly heartbeatTimeout: Duration;
}

/** The fields a caller may set; every other field takes its default. */
export type StageOverrides = Partial<Omit<StageConfig, 'stage'>>;

/** Built-in stages; any other name gets the defaults. */
const STAGES: Record<string, StageOverrides> = {
  dev: { workerSpot: true, maxActiveJobs: 5, logRetention: RetentionDays.TWO_WEEKS },
  prod: { logRetention: RetentionDays.THREE_MONTHS },
};

const STAGE_NAME = /^[a-z][a-z0-9-]{0,19}$/;
const INSTANCE_TYPE = /^[a-z][a-z0-9-]*\.[a-z0-9]+$/;

/** The configuration of `stage`, with `overrides` applied; throws with every problem found. */
export function stageConfig(stage: string, overrides: StageOverrides = {}): StageConfig {
  if (!STAGE_NAME.test(stage)) {
    throw new Error(
      `stage ${JSON.stringify(stage)}: use 1 to 20 lowercase letters, digits or '-', starting with a letter (e.g. dev, prod)`,
    );
  }
  const settings: Omit<StageConfig, 'workerAllowedInstanceTypes'> & Pick<StageOverrides, 'workerAllowedInstanceTypes'> = {
    stage,
    workerArchitecture: 'arm64',
    workerInstanceTypes: ['m7g.large', 'm6g.large', 'c7g.xlarge'],
    workerSpot: true,
    workerRootVolumeGib: 16,
    databasePorts: [5432],
    maxActiveJobs: 20,
    apiRateLimit: 50,
    apiBurstLimit: 100,
    logRetention: RetentionDays.ONE_MONTH,
    removalPolicy: stage === 'prod' ? RemovalPolicy.RETAIN : RemovalPolicy.DESTROY,
    amiParameterName: `/imagebuilder/barge/${stage}/worker-ami`,
    imageBuildInstanceTypes: ['c7g.large'],
    launchTimeout: Duration.minutes(10),
    heartbeatTimeout: Duration.minutes(2),
    ...STAGES[stage],
    ...overrides,
  };
  const config: StageConfig = {
    ...settings,
    // Follows the stage's (possibly overridden) default types: a stage allows more only by
    // saying so.
    workerAllowedInstanceTypes: settings.workerAllowedInstanceTypes ?? settings.workerInstanceTypes,
  };
  const problems = validate(config);
  if (problems.length > 0) {
    throw new Error(`stage ${stage}: ${problems.join('; ')}`);
  }
  return config;
}

function validate(c: StageConfig): string[] {
  const problems: string[] = [];
  if (c.account !== undefined && !/^\d{12}$/.test(c.account)) {
    problems.push(`account must be 12 digits, not ${JSON.stringify(c.account)}`);
  }
  if (c.region !== undefined && !/^[a-z]{2}(-[a-z]+)+-\d$/.test(c.region)) {
    problems.push(`region ${JSON.stringify(c.region)} is not a region name (e.g. eu-west-1)`);
  }
  if (c.network) {
    if (!/^vpc-([0-9a-f]{8}|[0-9a-f]{17})$/.test(c.network.vpcId)) {
      problems.push(`network.vpcId ${JSON.stringify(c.network.vpcId)} is not a VPC id (vpc-…)`);
    }
    if (c.network.subnetIds.length === 0) {
      problems.push('network.subnetIds: give at least one subnet of the VPC');
    }
    for (const subnet of c.network.subnetIds) {
      if (!/^subnet-([0-9a-f]{8}|[0-9a-f]{17})$/.test(subnet)) {
        problems.push(`network.subnetIds: ${JSON.stringify(subnet)} is not a subnet id (subnet-…)`);
      }
    }
  }
  if (c.workerInstanceTypes.length === 0) {
    problems.push('workerInstanceTypes: give at least one instance type');
  }
  if (c.workerAllowedInstanceTypes.length === 0) {
    problems.push('workerAllowedInstanceTypes: give at least one instance type');
  }
  // A type in several lists (the allow-list repeats the defaults) is reported once.
  const types = [...new Set([...c.workerInstanceTypes, ...c.workerAllowedInstanceTypes, ...c.imageBuildInstanceTypes])];
  for (const type of types) {
    if (!INSTANCE_TYPE.test(type)) {
      problems.push(`${JSON.stringify(type)} is not an instance type (e.g. m7g.large)`);
    }
  }
  if (c.workerArchitecture !== 'arm64' && c.workerArchitecture !== 'x86_64') {
    problems.push(`workerArchitecture must be arm64 or x86_64, not ${JSON.stringify(c.workerArchitecture)}`);
  }
  for (const type of types) {
    // Graviton families carry a `g` after the generation (m7g, c7gn, t4g).
    const graviton = /^[a-z]+\d+g/.test(type);
    if (INSTANCE_TYPE.test(type) && graviton !== (c.workerArchitecture === 'arm64')) {
      problems.push(`${type} is not an ${c.workerArchitecture} instance type`);
    }
  }
  // IAM refuses to launch a type outside the allow-list: a default type missing from it would
  // fail every job that names no type.
  const notAllowed = c.workerInstanceTypes.filter((type) => !c.workerAllowedInstanceTypes.includes(type));
  if (notAllowed.length > 0) {
    problems.push(`workerAllowedInstanceTypes must include every workerInstanceTypes entry; missing ${notAllowed.join(', ')}`);
  }
  if (c.imageBuildInstanceTypes.length === 0) {
    problems.push('imageBuildInstanceTypes: give at least one instance type');
  }
  if (!Number.isInteger(c.workerRootVolumeGib) || c.workerRootVolumeGib < 8 || c.workerRootVolumeGib > 16384) {
    problems.push(`workerRootVolumeGib must be a whole number from 8 to 16384, not ${c.workerRootVolumeGib}`);
  }
  if (c.databasePorts.length === 0) {
    problems.push('databasePorts: give at least one port (PostgreSQL listens on 5432)');
  }
  for (const port of c.databasePorts) {
    if (!Number.isInteger(port) || port < 1 || port > 65535) {
      problems.push(`databasePorts: ${port} is not a TCP port`);
    }
  }
  if (!Number.isInteger(c.maxActiveJobs) || c.maxActiveJobs < 1) {
    problems.push(`maxActiveJobs must be a positive whole number, not ${c.maxActiveJobs}`);
  }
  if (!(c.apiRateLimit > 0) || !Number.isInteger(c.apiBurstLimit) || c.apiBurstLimit < 1) {
    problems.push('apiRateLimit must be > 0 and apiBurstLimit a positive whole number');
  }
  if (!/^\/imagebuilder(\/[A-Za-z0-9_.-]+)+$/.test(c.amiParameterName)) {
    // Image Builder's service-linked role writes parameters under /imagebuilder/ only.
    problems.push(`amiParameterName ${JSON.stringify(c.amiParameterName)} must be a parameter path under /imagebuilder/ (e.g. /imagebuilder/barge/dev/worker-ami)`);
  }
  if (c.launchTimeout.toSeconds() < 60 || c.heartbeatTimeout.toSeconds() < 30) {
    problems.push('launchTimeout must be at least a minute and heartbeatTimeout at least 30 seconds');
  }
  return problems;
}

/** The fields of a stage file (`infra/stages/<stage>.json`): JSON, durations in seconds, retention in days. */
const FILE_FIELDS = new Set([
  'account', 'region', 'network', 'workerArchitecture', 'workerInstanceTypes', 'workerAllowedInstanceTypes', 'workerSpot', 'workerRootVolumeGib',
  'databasePorts', 'maxActiveJobs', 'apiRateLimit', 'apiBurstLimit', 'logRetentionDays', 'removalPolicy',
  'amiParameterName', 'imageBuildInstanceTypes', 'launchTimeoutSeconds', 'heartbeatTimeoutSeconds',
]);

/** Overrides from a stage file's parsed JSON; throws on unknown fields and wrong types, naming `source`. */
export function overridesFromJson(json: unknown, source: string): StageOverrides {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new Error(`${source}: expected a JSON object of stage settings`);
  }
  const unknown = Object.keys(json).filter((key) => !FILE_FIELDS.has(key));
  if (unknown.length > 0) {
    throw new Error(`${source}: unknown field(s) ${unknown.join(', ')}; known: ${[...FILE_FIELDS].join(', ')}`);
  }
  const { logRetentionDays, removalPolicy, launchTimeoutSeconds, heartbeatTimeoutSeconds, ...rest } = json as Record<string, unknown>;
  const overrides: Record<string, unknown> = { ...rest };
  // A lone string would be read as a list of one-letter "types"; name the field instead.
  for (const field of ['workerInstanceTypes', 'workerAllowedInstanceTypes', 'imageBuildInstanceTypes']) {
    const value = rest[field];
    if (value !== undefined && !(Array.isArray(value) && value.every((type) => typeof type === 'string'))) {
      throw new Error(`${source}: ${field} must be a list of instance types, e.g. ["m7g.large"]`);
    }
  }
  if (logRetentionDays !== undefined) {
    const days = Object.values(RetentionDays).filter((v) => typeof v === 'number') as number[];
    if (typeof logRetentionDays !== 'number' || !days.includes(logRetentionDays)) {
      throw new Error(`${source}: logRetentionDays must be one of ${days.join(', ')}`);
    }
    overrides.logRetention = logRetentionDays as RetentionDays;
  }
  if (removalPolicy !== undefined) {
    if (removalPolicy !== 'retain' && removalPolicy !== 'destroy') {
      throw new Error(`${source}: removalPolicy must be "retain" or "destroy"`);
    }
    overrides.removalPolicy = removalPolicy === 'retain' ? RemovalPolicy.RETAIN : RemovalPolicy.DESTROY;
  }
  for (const [field, value, key] of [
    ['launchTimeoutSeconds', launchTimeoutSeconds, 'launchTimeout'],
    ['heartbeatTimeoutSeconds', heartbeatTimeoutSeconds, 'heartbeatTimeout'],
  ] as const) {
    if (value !== undefined) {
      if (typeof value !== 'number' || !Number.isInteger(value) || value <= 0) {
        throw new Error(`${source}: ${field} must be a positive whole number of seconds`);
      }
      overrides[key] = Duration.seconds(value);
    }
  }
  return overrides as StageOverrides;
}
