import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { App, Stack } from 'aws-cdk-lib';
import { Match } from 'aws-cdk-lib/assertions';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as s3 from 'aws-cdk-lib/aws-s3';
import * as YAML from 'yaml';
import { AmiPipeline, COMPONENTS_DIR, documentParameters, readComponents } from '../lib/constructs/ami-pipeline';
import { build } from './support';

const dev = build('dev');
const pipeline = dev.templates.pipeline;
const REPO = path.join(__dirname, '..', '..');

interface Step {
  name: string;
  action: string;
  inputs: unknown;
}
interface ComponentDocument {
  name: string;
  schemaVersion: number | string;
  parameters?: Record<string, { type: string }>[];
  phases: { name: string; steps: Step[] }[];
}

describe('ami/components', () => {
  const documents = readComponents(COMPONENTS_DIR);

  it('are AWSTOE documents with build, validate and test phases', () => {
    assert.ok(documents.length >= 2);
    for (const file of documents) {
      const doc = YAML.parse(file.data) as ComponentDocument;
      assert.equal(String(doc.schemaVersion), '1', file.name);
      assert.ok(doc.name, `${file.name} has a name`);
      assert.deepEqual(doc.phases.map((p) => p.name), ['build', 'validate', 'test'], file.name);
      for (const phase of doc.phases) {
        assert.ok(phase.steps.length > 0, `${file.name}/${phase.name} has steps`);
        for (const step of phase.steps) {
          assert.match(step.name, /^[A-Za-z][A-Za-z0-9]*$/, `${file.name}: step names are alphanumeric`);
          assert.ok(['ExecuteBash', 'S3Download'].includes(step.action), `${file.name}/${step.name}: ${step.action}`);
          if (step.action === 'ExecuteBash') {
            const commands = (step.inputs as { commands: string[] }).commands;
            assert.ok(commands.length > 0);
          }
        }
      }
    }
  });

  it('test the worker and pg_dump in the image (docs/design-notes.md 20)', () => {
    const tests = documents
      .map((file) => YAML.parse(file.data) as ComponentDocument)
      .flatMap((doc) => doc.phases.filter((p) => p.name === 'test'))
      .flatMap((phase) => phase.steps)
      .flatMap((step) => (step.inputs as { commands?: string[] }).commands ?? [])
      .join('\n');
    assert.match(tests, /barge-worker --version/);
    assert.match(tests, /pg_dump"? --version/);
    assert.match(tests, /barge-worker launched/);
  });

  it('install every file the worker component downloads, and those files exist in ami/', () => {
    const worker = documents.find((d) => d.name.endsWith('barge-worker'));
    assert.ok(worker);
    const doc = YAML.parse(worker.data) as ComponentDocument;
    const downloads = doc.phases[0].steps.filter((s) => s.action === 'S3Download').flatMap((s) => s.inputs as { source: string }[]);
    const names = downloads.map((d) => d.source.replace('s3://{{ ArtifactBucket }}/worker/', ''));
    assert.deepEqual(names.sort(), ['barge-worker', 'barge-worker-limits.service', 'barge-worker.service', 'worker.env']);
    for (const name of names.filter((n) => n !== 'barge-worker')) {
      assert.ok(fs.existsSync(path.join(REPO, 'ami', name)), `ami/${name}`);
    }
    assert.deepEqual(documentParameters(worker.data), ['ArtifactBucket']);
  });

  it("point worker.env at the client tools the image installs", () => {
    const env = fs.readFileSync(path.join(REPO, 'ami/worker.env'), 'utf8');
    const pg = documents.find((d) => d.name.endsWith('postgresql-client'));
    const bin = /BARGE_PG_BIN=(\S+)/.exec(env)?.[1];
    assert.ok(bin && pg?.data.includes(`${bin}/pg_dump`), `${bin} is where the component checks pg_dump`);
  });

  it('start the worker only on an instance launched for a job, so an image booted without one stays up', () => {
    const limits = fs.readFileSync(path.join(REPO, 'ami', 'barge-worker-limits.service'), 'utf8');
    const worker = fs.readFileSync(path.join(REPO, 'ami', 'barge-worker.service'), 'utf8');
    assert.match(limits, /^ExecCondition=\/usr\/local\/bin\/barge-worker launched$/m);
    assert.doesNotMatch(limits, /^(Success|Failure)Action=/m, 'the limits unit never powers off');
    const mark = /^ExecStartPre=\/usr\/bin\/touch (\S+)$/m.exec(limits)?.[1];
    assert.ok(mark, 'the limits unit marks a launched instance');
    // A unit skipped by ExecCondition= counts as a success (SuccessAction would power off); a
    // failed Condition*= does not start it at all.
    assert.match(worker, new RegExp(`^ConditionPathExists=${mark}$`, 'm'));
    assert.doesNotMatch(worker, /^ExecCondition=/m);
    assert.match(worker, /^SuccessAction=poweroff$/m);
  });
});

describe('AmiPipeline', () => {
  it('builds every component, named by its content', () => {
    const components = Object.values(pipeline.findResources('AWS::ImageBuilder::Component')) as { Properties: { Name: string; Data: string; Platform: string } }[];
    const files = fs.readdirSync(COMPONENTS_DIR).filter((f) => f.endsWith('.yml'));
    assert.equal(components.length, files.length);
    for (const component of components) {
      assert.match(component.Properties.Name, /^barge-dev-.+-[0-9a-f]{10}$/);
      assert.equal(component.Properties.Platform, 'Linux');
    }
  });

  it('recipe: Ubuntu 24.04 from its public parameter, encrypted root, named by content hash', () => {
    pipeline.hasResourceProperties('AWS::ImageBuilder::ImageRecipe', {
      Name: Match.stringLikeRegexp('^barge-dev-worker-[0-9a-f]{10}$'),
      ParentImage: 'ssm:/aws/service/canonical/ubuntu/server/24.04/stable/current/arm64/hvm/ebs-gp3/ami-id',
      BlockDeviceMappings: [Match.objectLike({ DeviceName: '/dev/sda1', Ebs: Match.objectLike({ Encrypted: true }) })],
      Components: Match.arrayWith([Match.objectLike({ Parameters: [{ Name: 'ArtifactBucket', Value: [Match.anyValue()] }] })]),
    });
  });

  it('distribution writes the AMI id to the parameter the launch template resolves', () => {
    pipeline.hasResourceProperties('AWS::ImageBuilder::DistributionConfiguration', {
      Distributions: [
        Match.objectLike({
          SsmParameterConfigurations: [{ ParameterName: '/imagebuilder/barge/dev/worker-ami', DataType: 'aws:ec2:image' }],
        }),
      ],
    });
  });

  it('builds on IMDSv2 instances that are terminated on failure, and runs the image tests', () => {
    pipeline.hasResourceProperties('AWS::ImageBuilder::InfrastructureConfiguration', {
      InstanceMetadataOptions: { HttpTokens: 'required', HttpPutResponseHopLimit: 1 },
      TerminateInstanceOnFailure: true,
      InstanceTypes: ['c7g.large'],
    });
    pipeline.hasResourceProperties('AWS::ImageBuilder::ImagePipeline', {
      ImageTestsConfiguration: { ImageTestsEnabled: true, TimeoutMinutes: 60 },
      Status: 'ENABLED',
    });
  });

  it('builds x86_64 images from the amd64 Ubuntu image', () => {
    const x86 = build('x86', { workerArchitecture: 'x86_64', workerInstanceTypes: ['m7i.large'], imageBuildInstanceTypes: ['c7i.large'] });
    x86.templates.pipeline.hasResourceProperties('AWS::ImageBuilder::ImageRecipe', {
      ParentImage: Match.stringLikeRegexp('/amd64/'),
    });
  });

  it('exports what make ami reads', () => {
    for (const name of ['PipelineArn', 'AmiParameter', 'WorkerArchitecture']) {
      assert.ok(pipeline.toJSON().Outputs[name], name);
    }
    assert.ok(dev.templates.stateful.toJSON().Outputs.ArtifactLocation);
  });

  it('artifact bucket: encrypted, versioned, TLS only, no public access', () => {
    dev.templates.stateful.hasResourceProperties('AWS::S3::Bucket', {
      BucketEncryption: { ServerSideEncryptionConfiguration: [{ ServerSideEncryptionByDefault: { SSEAlgorithm: 'AES256' } }] },
      VersioningConfiguration: { Status: 'Enabled' },
      PublicAccessBlockConfiguration: { BlockPublicAcls: true, BlockPublicPolicy: true, IgnorePublicAcls: true, RestrictPublicBuckets: true },
    });
    dev.templates.stateful.hasResourceProperties('AWS::S3::BucketPolicy', {
      PolicyDocument: { Statement: Match.arrayWith([Match.objectLike({ Effect: 'Deny', Condition: { Bool: { 'aws:SecureTransport': 'false' } } })]) },
    });
  });

  it('refuses an AMI parameter Image Builder may not write, and an empty component list', () => {
    const stack = new Stack(new App(), 'S');
    const vpc = new ec2.Vpc(stack, 'V');
    const bucket = new s3.Bucket(stack, 'B');
    const props = { namePrefix: 'barge-t', artifactBucket: bucket, architecture: 'arm64' as const, instanceTypes: ['c7g.large'], vpc, subnetId: 'subnet-0aaaaaaaaaaaaaaa1' };
    assert.throws(() => new AmiPipeline(stack, 'A', { ...props, amiParameterName: '/barge/ami' }), /must start with \/imagebuilder\//);
    assert.throws(() => new AmiPipeline(stack, 'C', { ...props, amiParameterName: '/imagebuilder/x', instanceTypes: [] }), /instanceTypes/);
    assert.throws(() => readComponents(fs.mkdtempSync(path.join(require('node:os').tmpdir(), 'barge-'))), /no component documents/);
  });
});
