import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Duration, RemovalPolicy } from 'aws-cdk-lib';
import { RetentionDays } from 'aws-cdk-lib/aws-logs';
import { overridesFromJson, stageConfig } from '../lib/config';

describe('stage configuration', () => {
  it('gives every stage the defaults, prod retained and the others destroyable', () => {
    const dev = stageConfig('dev');
    assert.equal(dev.removalPolicy, RemovalPolicy.DESTROY);
    assert.equal(dev.amiParameterName, '/imagebuilder/barge/dev/worker-ami');
    assert.equal(dev.workerArchitecture, 'arm64');
    assert.equal(dev.account, undefined, 'no account is hard-coded');
    assert.equal(dev.region, undefined, 'no region is hard-coded');
    const prod = stageConfig('prod');
    assert.equal(prod.removalPolicy, RemovalPolicy.RETAIN);
    assert.equal(prod.logRetention, RetentionDays.THREE_MONTHS);
    assert.equal(stageConfig('staging').removalPolicy, RemovalPolicy.DESTROY);
  });

  it('refuses bad stage names', () => {
    for (const bad of ['', 'Prod', '1dev', 'dev_1', 'a'.repeat(21)]) {
      assert.throws(() => stageConfig(bad), /stage .*lowercase letters/, bad);
    }
  });

  it('reports every invalid setting, naming it', () => {
    assert.throws(
      () =>
        stageConfig('dev', {
          account: '12345',
          region: 'mars',
          network: { vpcId: 'vpc-12', subnetIds: ['sn-1'] },
          workerRootVolumeGib: 4,
          databasePorts: [70000],
          maxActiveJobs: 0,
        }),
      (e: Error) =>
        ['account must be 12 digits', 'region "mars"', 'not a subnet id', 'workerRootVolumeGib', 'databasePorts: 70000', 'maxActiveJobs'].every(
          (part) => e.message.includes(part),
        ),
    );
    assert.throws(() => stageConfig('dev', { network: { vpcId: 'vpc-0123456789abcdef0', subnetIds: [] } }), /at least one subnet/);
  });

  it('refuses instance types of the other architecture', () => {
    assert.throws(() => stageConfig('dev', { workerInstanceTypes: ['m7i.large'] }), /m7i\.large is not an arm64 instance type/);
    assert.throws(
      () => stageConfig('dev', { workerArchitecture: 'x86_64', workerInstanceTypes: ['m7g.large'], imageBuildInstanceTypes: ['c7i.large'] }),
      /m7g\.large is not an x86_64 instance type/,
    );
    assert.doesNotThrow(() =>
      stageConfig('dev', { workerArchitecture: 'x86_64', workerInstanceTypes: ['m7i.large', 'c6a.xlarge'], imageBuildInstanceTypes: ['c7i.large'] }),
    );
  });

  it('allows jobs the default instance types unless the stage allows more', () => {
    assert.deepEqual(stageConfig('dev').workerAllowedInstanceTypes, ['m7g.large', 'm6g.large', 'c7g.xlarge']);
    assert.deepEqual(stageConfig('prod').workerAllowedInstanceTypes, stageConfig('prod').workerInstanceTypes);
    // The default follows overridden default types.
    assert.deepEqual(stageConfig('dev', { workerInstanceTypes: ['m7g.xlarge'] }).workerAllowedInstanceTypes, ['m7g.xlarge']);
    const wider = stageConfig('dev', { workerAllowedInstanceTypes: ['m7g.large', 'm6g.large', 'c7g.xlarge', 'r7g.2xlarge'] });
    assert.deepEqual(wider.workerAllowedInstanceTypes, ['m7g.large', 'm6g.large', 'c7g.xlarge', 'r7g.2xlarge']);
    assert.deepEqual(wider.workerInstanceTypes, ['m7g.large', 'm6g.large', 'c7g.xlarge']);
  });

  it('refuses an allow-list that is empty, of the other architecture, or missing a default type', () => {
    assert.throws(
      () => stageConfig('dev', { workerAllowedInstanceTypes: ['m7g.large', 'm6g.large', 'c7g.xlarge', 'p5.48xlarge'] }),
      /p5\.48xlarge is not an arm64 instance type/,
    );
    assert.throws(() => stageConfig('dev', { workerAllowedInstanceTypes: ['m7g.large', 'm6g.large', 'c7g.xlarge', 'huge'] }), /"huge" is not an instance type/);
    assert.throws(
      () => stageConfig('dev', { workerAllowedInstanceTypes: ['m7g.large', 'r7g.xlarge'] }),
      /workerAllowedInstanceTypes must include every workerInstanceTypes entry; missing m6g\.large, c7g\.xlarge/,
    );
    assert.throws(() => stageConfig('dev', { workerAllowedInstanceTypes: [] }), /workerAllowedInstanceTypes: give at least one instance type/);
    assert.throws(
      () =>
        stageConfig('dev', {
          workerArchitecture: 'x86_64',
          workerInstanceTypes: ['m7i.large'],
          workerAllowedInstanceTypes: ['m7i.large', 'm7g.large'],
          imageBuildInstanceTypes: ['c7i.large'],
        }),
      /m7g\.large is not an x86_64 instance type/,
    );
    // A bad default type is reported once, not again as an entry of the allow-list.
    assert.throws(
      () => stageConfig('dev', { workerInstanceTypes: ['m7i.large'] }),
      (e: Error) => e.message.split('m7i.large is not an arm64 instance type').length === 2,
    );
  });

  it('keeps the AMI parameter where Image Builder may write it', () => {
    assert.throws(() => stageConfig('dev', { amiParameterName: '/barge/worker-ami' }), /under \/imagebuilder\//);
  });

  it('reads stage files: JSON settings, seconds and days, unknown fields refused', () => {
    const overrides = overridesFromJson(
      {
        region: 'eu-west-1',
        network: { vpcId: 'vpc-0123456789abcdef0', subnetIds: ['subnet-0aaaaaaaaaaaaaaa1', 'subnet-0bbbbbbbbbbbbbbb2'] },
        logRetentionDays: 7,
        removalPolicy: 'retain',
        launchTimeoutSeconds: 900,
        workerInstanceTypes: ['m7g.xlarge'],
        workerAllowedInstanceTypes: ['m7g.xlarge', 'm7g.4xlarge'],
      },
      'stages/x.json',
    );
    const config = stageConfig('x', overrides);
    assert.equal(config.region, 'eu-west-1');
    assert.deepEqual(config.network?.subnetIds, ['subnet-0aaaaaaaaaaaaaaa1', 'subnet-0bbbbbbbbbbbbbbb2']);
    assert.equal(config.logRetention, RetentionDays.ONE_WEEK);
    assert.equal(config.removalPolicy, RemovalPolicy.RETAIN);
    assert.equal(config.launchTimeout.toSeconds(), Duration.minutes(15).toSeconds());
    assert.deepEqual(config.workerInstanceTypes, ['m7g.xlarge']);
    assert.deepEqual(config.workerAllowedInstanceTypes, ['m7g.xlarge', 'm7g.4xlarge']);
    assert.throws(() => overridesFromJson({ regoin: 'eu-west-1' }, 'stages/x.json'), /stages\/x\.json: unknown field\(s\) regoin/);
    assert.throws(() => overridesFromJson({ logRetentionDays: 10 }, 'f'), /logRetentionDays must be one of/);
    assert.throws(() => overridesFromJson({ removalPolicy: 'keep' }, 'f'), /"retain" or "destroy"/);
    assert.throws(() => overridesFromJson([], 'f'), /JSON object/);
    assert.throws(() => overridesFromJson({ workerAllowedInstanceTypes: 'm7g.large' }, 'f'), /f: workerAllowedInstanceTypes must be a list of instance types/);
    assert.throws(() => overridesFromJson({ workerInstanceTypes: [7] }, 'f'), /f: workerInstanceTypes must be a list of instance types/);
  });
});
