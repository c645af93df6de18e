/**
 * The pipeline stack (stateless): the worker image pipeline. `make ami` reads its outputs.
 */
import { CfnOutput, Stack, StackProps } from 'aws-cdk-lib';
import { IBucket } from 'aws-cdk-lib/aws-s3';
import { Construct } from 'constructs';
import { StageConfig } from '../config';
import { AmiPipeline } from '../constructs/ami-pipeline';
import { WorkerFleet } from '../constructs/worker-fleet';

export interface PipelineStackProps extends StackProps {
  /** The stage's configuration. */
  readonly config: StageConfig;
  /** Where `make ami` uploads the worker (stateful stack). */
  readonly artifactBucket: IBucket;
  /** The fleet whose image this builds (its network and AMI parameter). */
  readonly fleet: WorkerFleet;
}

/** The AMI pipeline. */
export class PipelineStack extends Stack {
  /** The pipeline. */
  public readonly ami: AmiPipeline;

  constructor(scope: Construct, id: string, props: PipelineStackProps) {
    super(scope, id, props);
    const c = props.config;
    this.ami = new AmiPipeline(this, 'Ami', {
      namePrefix: `barge-${c.stage}`,
      artifactBucket: props.artifactBucket,
      amiParameterName: props.fleet.amiParameterName,
      architecture: c.workerArchitecture,
      instanceTypes: c.imageBuildInstanceTypes,
      vpc: props.fleet.vpc,
      subnetId: props.fleet.subnetIds[0],
    });
    new CfnOutput(this, 'PipelineArn', { value: this.ami.pipeline.attrArn, description: 'make ami starts this pipeline' });
    new CfnOutput(this, 'AmiParameter', { value: props.fleet.amiParameterName, description: 'The worker AMI id, written by the pipeline' });
    new CfnOutput(this, 'WorkerArchitecture', { value: c.workerArchitecture, description: 'make ami builds barge-worker for this' });
  }
}
