"""RLHF: improve a chat model by letting it answer prompts and rewarding the good answers.

    SFT run ──► policy (trained) + reference (frozen copy) ──► RUN (a normal GPT run, "stage": "ppo" | "grpo")

One step (InstructGPT's recipe):
  1. rollout: the policy answers a batch of prompts (temperature 1, up to max_new_tokens,
     stopping at <|im_end|>);
  2. score:   a reward model or a task's verifier grades each whole answer with one number;
  3. learn:   a few epochs of minibatches of the clipped PPO objective on those answers.

Two ways to turn scores into per-token advantages:

  ppo   a value head V(s_t) (one Linear on the policy's hidden states) and GAE. Each token
        is an action; its reward is a KL penalty, and the last token also gets the score:
            r_t = -kl_coef * (log pi(a_t|s_t) - log pi_ref(a_t|s_t))   (+ score at the end)
            delta_t = r_t + gamma V(s_t+1) - V(s_t);   A_t = delta_t + gamma lam A_t+1
        The value head is trained towards the returns A_t + V(s_t) with a clipped loss.
  grpo  (DeepSeekMath) no value head: G answers to each prompt, and every token of an answer
        gets the answer's score relative to its group: A = (score - mean_G) / (std_G + eps).
        The KL to the reference is a loss term instead of a reward, with the k3 estimator
            kl_t = exp(ref - logp) - (ref - logp) - 1   (>= 0, unbiased, low variance).

Both then minimise the clipped surrogate, which stops one batch from moving the policy far:
    ratio = pi(a|s) / pi_old(a|s);   L = -min(ratio A, clip(ratio, 1-eps, 1+eps) A)

Why the KL term: the reward model (or verifier) is only right near the answers it was built
for; without a leash to the reference the policy drifts to text that games the score.

    config.py      RLConfig: the algorithm's settings
    policy.py      the policy with its value head
    prompts.py     the prompts to answer;  rewards.py  what grades the answers
    rollout.py     one step's experience: answers, scores, log-probs, advantages
    objectives.py  the maths: GAE, whitening, the clipped losses, KL, group advantages
    ppo.py         the stage: the update and the driver (one process or many under torchrun)
"""
