/**
 * The service stack (stateless): the worker fleet, the coordinator's HTTP API and the
 * reaper. Its outputs are what `barge configure --stack` and `make ami` read.
 */
import { CfnOutput, Stack, StackProps } from 'aws-cdk-lib';
import { IKey } from 'aws-cdk-lib/aws-kms';
import { Construct } from 'constructs';
import { StageConfig } from '../config';
import { ubuntuImageParameter } from '../constructs/ami-pipeline';
import { CoordinatorApi } from '../constructs/coordinator-api';
import { JobTable } from '../constructs/job-table';
import { Reaper } from '../constructs/reaper';
import { WorkerFleet } from '../constructs/worker-fleet';

export interface ServiceStackProps extends StackProps {
  /** The stage's configuration. */
  readonly config: StageConfig;
  /** The jobs (stateful stack). */
  readonly jobs: JobTable;
  /** The key (stateful stack). */
  readonly key: IKey;
}

/** Fleet, API, reaper. */
export class ServiceStack extends Stack {
  /** Where and how workers run. */
  public readonly fleet: WorkerFleet;
  /** The job API. */
  public readonly api: CoordinatorApi;
  /** The reaper. */
  public readonly reaper: Reaper;

  constructor(scope: Construct, id: string, props: ServiceStackProps) {
    super(scope, id, props);
    const c = props.config;
    const logs = { logRetention: c.logRetention, removalPolicy: c.removalPolicy };
    const deadlines = { launchTimeout: c.launchTimeout, heartbeatTimeout: c.heartbeatTimeout };
    this.fleet = new WorkerFleet(this, 'Workers', {
      amiParameterName: c.amiParameterName,
      placeholderImageParameter: ubuntuImageParameter(c.workerArchitecture),
      instanceTypes: c.workerInstanceTypes,
      allowedInstanceTypes: c.workerAllowedInstanceTypes,
      spot: c.workerSpot,
      rootVolumeGib: c.workerRootVolumeGib,
      databasePorts: c.databasePorts,
      network: c.network,
      ...logs,
    });
    this.api = new CoordinatorApi(this, 'Api', {
      table: props.jobs,
      key: props.key,
      fleet: this.fleet,
      maxActiveJobs: c.maxActiveJobs,
      deadlines,
      rateLimit: c.apiRateLimit,
      burstLimit: c.apiBurstLimit,
      ...logs,
    });
    this.reaper = new Reaper(this, 'Reaper', {
      table: props.jobs,
      fleet: this.fleet,
      apiEndpoint: this.api.api.apiEndpoint,
      deadlines,
      ...logs,
    });

    new CfnOutput(this, 'ApiEndpoint', { value: this.api.api.apiEndpoint, description: 'barge configure --stack reads this' });
    new CfnOutput(this, 'Region', { value: this.region, description: 'Region of the API' });
    new CfnOutput(this, 'Stage', { value: c.stage, description: 'Stage of this deployment' });
    new CfnOutput(this, 'UserPolicyArn', {
      value: this.api.userPolicy.managedPolicyArn,
      description: "Attach to barge's users (or their roles): the user routes of the API",
    });
    new CfnOutput(this, 'WorkerSecurityGroup', {
      value: this.fleet.securityGroup.securityGroupId,
      description: "Workers' security group: allow it in on your databases' security groups",
    });
    new CfnOutput(this, 'WorkerLogGroup', { value: this.fleet.logGroup.logGroupName, description: 'Workers log here, a stream per job attempt' });
  }
}
