"""A physics prior for Gymnasium's ``InvertedPendulum-v5`` (MuJoCo), as a user would write it.

Use it from the command line::

    hybridgym loop --env InvertedPendulum-v5 \
        --prior examples/priors/inverted_pendulum.py:CartPolePrior --run-dir runs/ip-prior

It is the textbook cart-pole (a cart on a rail, a pole on a hinge, the motor's force on the
cart), written in the env's observation order: cart position x, pole angle theta (0 upright,
positive leaning towards +x), their velocities. Its constants are deliberately off, as
estimates from a data sheet would be (the env's model has a 10.5 kg cart, a 5.0 kg pole with
its centre of mass 0.3 m above the hinge and 0.19 kg m^2 of inertia about it, and a motor gear
of 100 N per unit of action); they are learnable and the fit corrects them. What it lacks
entirely, the joints' damping (1 N s/m and 1 N m s), is left to the residual network.

hybridgym builds the class with no arguments (``CartPolePrior()``): every parameter has a
default.
"""

import torch

from hybridgym.models import PhysicsPrior

GRAVITY = 9.81  # m/s^2, known


class CartPolePrior(PhysicsPrior):
    """dx/dt of a cart-pole; state (x, theta, x_dot, theta_dot), action u (force = gain u)."""

    def __init__(
        self,
        cart_mass: float = 7.0,
        pole_mass: float = 3.5,
        pole_com: float = 0.4,
        pole_inertia: float = 0.1,
        gain: float = 70.0,
    ) -> None:
        super().__init__(state_dim=4, action_dim=1)
        self.add_constant("cart_mass", cart_mass, positive=True)  # kg
        self.add_constant("pole_mass", pole_mass, positive=True)  # kg
        self.add_constant("pole_com", pole_com, positive=True)  # m, hinge to centre of mass
        self.add_constant("pole_inertia", pole_inertia, positive=True)  # kg m^2, about the COM
        self.add_constant("gain", gain, positive=True)  # N per unit of action

    def forward(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        c = self.constants()
        theta, x_dot, theta_dot = x[:, 1], x[:, 2], x[:, 3]
        sin, cos = torch.sin(theta), torch.cos(theta)
        m, big_m, arm = c["pole_mass"], c["cart_mass"], c["pole_com"]
        inertia = c["pole_inertia"] + m * arm**2  # about the hinge
        force = c["gain"] * u[:, 0]
        # Lagrange's equations: [[M + m, m l cos], [m l cos, I]] [x'', theta''] = rhs
        a11, a12, a22 = big_m + m, m * arm * cos, inertia
        b1 = force + m * arm * sin * theta_dot**2
        b2 = m * GRAVITY * arm * sin
        det = a11 * a22 - a12**2
        x_acc = (a22 * b1 - a12 * b2) / det
        theta_acc = (a11 * b2 - a12 * b1) / det
        return torch.stack([x_dot, theta_dot, x_acc, theta_acc], dim=1)
