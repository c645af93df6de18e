/**
 * The barge app: a stage's three stacks, `barge-<stage>-stateful`, `-service` and
 * `-pipeline`, in the stage's account and region.
 */
import { App, Tags } from 'aws-cdk-lib';
import { StageConfig } from './config';
import { PipelineStack } from './stacks/pipeline';
import { ServiceStack } from './stacks/service';
import { StatefulStack } from './stacks/stateful';

/** Feature flags and settings of every barge app (the CLI's `-c` values take precedence). */
export const APP_CONTEXT = {
  '@aws-cdk/core:defaultCrossStackReferences': 'strong',
  // CloudFormation schema findings fail the synth instead of warning.
  '@aws-cdk/core:validateAgainstDefaultRules': true,
  '@aws-cdk/core:checkSecretUsage': true,
  '@aws-cdk/aws-iam:minimizePolicies': true,
  '@aws-cdk/core:enablePartitionLiterals': true,
  '@aws-cdk/aws-iam:standardizedServicePrincipals': true,
};

/** The stacks of one stage. */
export interface BargeStacks {
  readonly stateful: StatefulStack;
  readonly service: ServiceStack;
  readonly pipeline: PipelineStack;
}

/** Adds `config`'s stage to `app`. */
export function addStage(app: App, config: StageConfig): BargeStacks {
  // Without an account and region in the stage, the stacks are environment-agnostic: they
  // deploy to the account and region of the credentials in use.
  const env = config.account || config.region ? { account: config.account, region: config.region } : undefined;
  const name = (part: string) => `barge-${config.stage}-${part}`;
  const stateful = new StatefulStack(app, name('stateful'), {
    env,
    config,
    description: `barge ${config.stage}: job table, key, artifact bucket`,
    terminationProtection: config.stage === 'prod',
  });
  const service = new ServiceStack(app, name('service'), {
    env,
    config,
    jobs: stateful.jobs,
    key: stateful.key,
    description: `barge ${config.stage}: job API, reaper, worker fleet`,
  });
  const pipeline = new PipelineStack(app, name('pipeline'), {
    env,
    config,
    artifactBucket: stateful.artifactBucket,
    fleet: service.fleet,
    description: `barge ${config.stage}: worker image pipeline`,
  });
  for (const stack of [stateful, service, pipeline]) {
    Tags.of(stack).add('Project', 'barge');
    Tags.of(stack).add('Stage', config.stage);
  }
  return { stateful, service, pipeline };
}
